"""How found incidents score against injected truth, and which foreign episodes are scored."""

from __future__ import annotations

import numpy as np

from benchmarks.incident_truth import Found, Truth, score
from benchmarks.life_cycle_tuning import _label_runs
from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS

PEAK = np.zeros((WINDOW_STEPS, NUM_FEATURES), np.float32)


def truth(node: str, start: int, end: int, visible: bool = True, enrolled: bool = False) -> Truth:
    return Truth("net", node, "dns_failure", start, end, PEAK, visible=visible, enrolled=enrolled)


def found(node: str, start: int, end: int | None, label: str = "dns_failure") -> Found:
    return Found("net", node, label, start, end, start, end)


def test_an_incident_within_ten_minutes_of_both_ends_is_right_and_one_outside_is_not() -> None:
    truths = [truth("a", 1000, 1100), truth("b", 1000, 1100)]
    result = score(truths, set(), 2, [found("a", 1003, 1108), found("b", 1003, 1111)])
    assert result["visible"] == 2 and result["visible_ok"] == 1 and result["late_abatements"] == 1


def test_an_early_abatement_is_wrong_and_two_incidents_are_a_split() -> None:
    truths = [truth("a", 1000, 1100), truth("b", 1000, 1100)]
    incidents = [found("a", 1002, 1050), found("b", 1002, 1040), found("b", 1060, 1101)]
    result = score(truths, set(), 2, incidents)
    assert result["visible_ok"] == 0 and result["early_abatements"] == 1 and result["split"] == 1


def test_incidents_overlapping_no_episode_are_false_and_counted_per_fault_free_node_day() -> None:
    result = score([truth("a", 1000, 1100)], {("net", "c")}, 4, [found("a", 1200, 1230), found("c", 10, 20)])
    assert result["false_incidents"] == 2 and result["false_incidents_on_fault_free_nodes"] == 1
    assert result["false_incidents_per_fault_free_node_day"] == 0.25


def test_an_enrolled_episode_is_not_scored_and_its_incident_is_not_false() -> None:
    truths = [truth("a", 1000, 1100, enrolled=True), truth("b", 1000, 1100)]
    result = score(truths, set(), 2, [found("a", 1002, 1101), found("b", 1002, 1101)])
    assert result["episodes"] == 1 and result["enrolled_episodes"] == 1
    assert result["visible"] == 1 and result["visible_ok"] == 1 and result["false_incidents"] == 0


def test_only_the_enrolled_nodes_episode_is_marked_enrolled() -> None:
    minutes = np.arange(5000, 5300)
    labels = np.full(len(minutes), "normal", dtype=object)
    labels[100:180] = "dns_failure"
    values = np.zeros((len(minutes), NUM_FEATURES), np.float32)
    enrolled_at = {"dns_failure": ("a", 5100)}  # a window starting at the episode's first minute
    on_a = _label_runs("net", "a", minutes, labels, values, enrolled_at)
    on_b = _label_runs("net", "b", minutes, labels, values, enrolled_at)
    assert [(t.start, t.end, t.enrolled) for t in on_a] == [(5100, 5180, True)]
    assert [(t.start, t.end, t.enrolled) for t in on_b] == [(5100, 5180, False)]
