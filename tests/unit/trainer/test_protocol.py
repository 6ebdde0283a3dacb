"""The transfer protocol: what is enrolled, what is diagnosed, and how figures and spreads are taken."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from faultprint.traffic.windowing import RepairReport, WindowSet
from faultprint.trainer.protocol import (
    MODEL,
    NetworkSplit,
    ProtocolOptions,
    evaluate_network,
    first_episode,
    report_markdown,
    reports_from_dict,
    reports_to_dict,
    score_method,
    strong_baseline,
)

DAY0 = 20_000 * 1440
NODES = ("n0", "n1", "n2", "n3")
# (node, hour index from the first minute) -> fault; every other window is normal.
FAULTS = {
    **{("n0", h): "a" for h in (5, 6)},  # fault a on the first day
    **{(n, h): "a" for n in NODES for h in (30, 31)},
    **{("n1", h): "b" for h in (40, 41, 42, 45)},  # fault b only later: first episode 40-42
    **{("n2", h): "b" for h in (60, 61)},
}


def _cut(features: int = 2) -> WindowSet:
    node, start, labels = [], [], []
    for n in NODES:
        for hour in range(72):
            node.append(n)
            start.append(DAY0 + 60 * hour)
            labels.append(FAULTS.get((n, hour), "normal"))
    windows = np.random.default_rng(0).random((len(node), 60, features)).astype(np.float32)
    return WindowSet(windows, np.array(labels), np.array(node), np.array(["net"] * len(node)),
                     np.array(start, dtype=np.int64), RepairReport())  # fmt: skip


def _oracle(cut: WindowSet, noise: float = 0.01) -> np.ndarray:
    place = {"normal": (0.0, 0.0), "a": (10.0, 0.0), "b": (0.0, 10.0)}
    vectors = np.array([place[c] for c in cut.labels])
    return vectors + noise * np.random.default_rng(1).standard_normal(vectors.shape)


def test_the_first_day_gives_references_and_a_fault_absent_from_it_comes_from_its_first_episode() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    assert split.conditions == ("normal", "a", "b")
    assert split.from_first_episode == ("b",)
    a_pool = split.pools["a"]
    assert set(zip(cut.node[a_pool], (cut.start_minute[a_pool] - DAY0) // 60, strict=True)) == {
        ("n0", 5),
        ("n0", 6),
    }
    b_pool = split.pools["b"]
    assert set(zip(cut.node[b_pool], (cut.start_minute[b_pool] - DAY0) // 60, strict=True)) == {
        ("n1", h) for h in (40, 41, 42)
    }
    assert not split.diagnosed[b_pool].any(), "the windows enrolled from are not diagnosed"
    diagnosed = Counter(cut.labels[split.diagnosed])
    assert diagnosed == {"normal": 4 * 48 - 8 - 6, "a": 8, "b": 3}  # later days only
    assert not (split.first_day & split.diagnosed).any()
    assert split.first_day.sum() == 4 * 24  # windows that end within the first day


def test_an_episode_ends_at_a_gap_between_windows_of_its_node() -> None:
    cut = _cut()
    episode = first_episode(cut, "b")
    assert list((cut.start_minute[episode] - DAY0) // 60) == [40, 41, 42]
    assert set(cut.node[episode]) == {"n1"}


def test_a_split_needs_normal_on_its_first_day_and_one_network() -> None:
    cut = _cut()
    with pytest.raises(ValueError, match="marked normal"):
        NetworkSplit.of(cut.select(cut.labels != "normal"), 1440)
    mixed = WindowSet(cut.windows, cut.labels, cut.node, np.array(["x", "y"] * (len(cut.node) // 2)),
                      cut.start_minute, cut.report)  # fmt: skip
    with pytest.raises(ValueError, match="one network"):
        NetworkSplit.of(mixed, 1440)


def test_perfect_vectors_score_one_with_no_false_alarm_and_no_spread() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    scores = score_method(_oracle(cut), split, ProtocolOptions(shots=(1, 2), draws=3, node_samples=4), None)
    for k in ("1", "2"):
        assert scores[k].balanced_accuracy == pytest.approx(1.0)
        assert scores[k].spread == pytest.approx(0.0) and scores[k].false_alarms == 0.0
        assert scores[k].unknown_rate is None
        assert scores[k].recall == {"normal": 1.0, "a": 1.0, "b": 1.0}


def test_a_method_that_sees_nothing_scores_chance_of_the_balanced_kind() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    blind = np.zeros((len(cut.labels), 2))  # every window alike: the nearest is the first reference, normal
    score = score_method(blind, split, ProtocolOptions(draws=2, node_samples=2), None)["1"]
    # Plain accuracy would be 178 / 189; balanced accuracy does not flatter.
    assert score.balanced_accuracy == pytest.approx(1 / 3)
    assert score.false_alarms == 0.0 and score.lowest_fault_recall == 0.0


def test_normal_windows_near_a_fault_are_false_alarms_and_node_samples_spread_them() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    vectors = _oracle(cut)
    noisy_node = (cut.node == "n3") & (cut.labels == "normal") & ~split.first_day
    vectors[noisy_node] = (10.0, 0.0)  # n3's later normal traffic looks like fault a
    score = score_method(vectors, split, ProtocolOptions(draws=2, node_samples=40), None)["1"]
    share = noisy_node.sum() / (split.diagnosed & (cut.labels == "normal")).sum()
    assert score.false_alarms == pytest.approx(share, abs=0.08)
    assert score.spread_nodes > 0.01, "which nodes are sampled changes the figure"
    assert score.spread_draws < score.spread_nodes
    assert score.bar_figure == pytest.approx(score.balanced_accuracy - score.spread)


def test_redraws_enrol_other_windows_and_their_spread_is_reported() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    vectors = _oracle(cut)
    vectors[split.pools["a"][0]] = (0.0, 0.5)  # one first-day window of a looks normal
    scores = score_method(vectors, split, ProtocolOptions(shots=(1, 2), draws=12, node_samples=1), None)
    assert 0 < scores["1"].recall["a"] < 1, "some draws enrol the bad window, some the good one"
    assert scores["1"].spread_draws > 0.05
    assert scores["2"].recall["a"] == pytest.approx(1.0), "with both enrolled, the good one wins"


def test_windows_beyond_the_threshold_are_unknown_and_never_false_alarms() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    vectors = _oracle(cut, noise=1.0)
    vectors[(cut.labels == "normal") & ~split.first_day] = (10.0, 0.0)
    score = score_method(vectors, split, ProtocolOptions(draws=1, node_samples=1), threshold=1e-9)["1"]
    assert score.unknown_rate == pytest.approx(1.0)
    assert score.false_alarms == 0.0


def test_the_strong_baseline_reads_summaries_relative_to_the_first_day() -> None:
    cut = _cut(features=3)
    split = NetworkSplit.of(cut, 1440)
    summaries = strong_baseline(split)
    assert summaries.shape == (len(cut.labels), 15)
    assert np.abs(np.median(summaries[split.first_day], axis=0)).max() < 1e-6


def test_reports_survive_json_and_render_every_method() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    options = ProtocolOptions(draws=2, node_samples=2)
    oracle = _oracle(cut)
    report = evaluate_network(split, {MODEL: (lambda s: oracle, 0.5), "blind": (lambda s: oracle * 0, None)},
                              options)  # fmt: skip
    assert report.diagnosed_windows == {"normal": 178, "a": 8, "b": 3}
    back = reports_from_dict(reports_to_dict([report], options))
    assert back[0].score().balanced_accuracy == report.score().balanced_accuracy
    text = report_markdown(back, options, "v1")
    assert "| model | 1.000 ± 0.000" in text and "| blind |" in text
    assert "enrolled from their first episode: b" in text


def test_options_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ProtocolOptions(shots=(0,))
    with pytest.raises(ValueError):
        ProtocolOptions(draws=0)


def test_a_fault_case_matched_by_its_prototype_outvotes_one_stray_example() -> None:
    cut = _cut()
    split = NetworkSplit.of(cut, 1440)
    vectors = _oracle(cut)
    stray = split.pools["a"][0]
    vectors[stray] = (0.0, -6.0)  # an example of a that looks like nothing else of a
    later_normal = np.flatnonzero(split.diagnosed & (cut.labels == "normal"))
    vectors[later_normal[:5]] = (0.0, -5.0)  # and a few normal windows sit beside it
    nearest_example = score_method(vectors, split, ProtocolOptions(shots=(2,), draws=1, node_samples=1), None)
    prototype = score_method(vectors, split, ProtocolOptions(shots=(2,), draws=1, node_samples=1,
                                                             case_matching="prototype"), None)  # fmt: skip
    assert nearest_example["2"].false_alarms > 0, "the stray example draws normal windows to fault a"
    assert prototype["2"].false_alarms == 0.0 and prototype["2"].recall["a"] == 1.0
    with pytest.raises(ValueError, match="case_matching"):
        ProtocolOptions(case_matching="vote")
