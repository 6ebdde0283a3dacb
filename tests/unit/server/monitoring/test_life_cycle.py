"""A node's incident life cycle: raise on m of n diagnoses, clear on a run of minutes diagnosed normal
or a longer run of its signature back to normal, change of fault, suppression, resends and restoring
from JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from faultprint.server.monitoring.life_cycle import (
    MAX_SILENT_MINUTES,
    NORMAL,
    UNKNOWN,
    LifeCycleOptions,
    MinuteDiagnosis,
    NodeLifeCycle,
    Transition,
)
from faultprint.traffic.catalogue import NUM_FEATURES

FAULT = "hss_unreachable"
OTHER = "dns_failure"
VERSION = "v7"
# A realistic UTC minute, so no test relies on minutes starting at 0.
T0 = 28_000_000

# Diagnoses alone: signatures off (no departures are given).
PLAIN = LifeCycleOptions(raise_minutes=4, of_last_minutes=6, clear_minutes=5)
# With signatures: the three statistics departing most; raised while the one departing most does
# so by 2 units, back to normal within 1 (whatever the peak), raised again after a clear by
# signature at 4 (in one minute, whatever the peak). Cleared by 3 minutes diagnosed normal, or
# by 7 with the signature back while the diagnoses still name the fault. Every value is set
# here, so that re-tuned defaults do not change what these tests check.
SIGNED = LifeCycleOptions(
    raise_minutes=4, of_last_minutes=6, clear_minutes=3, signature_clear_minutes=7, signature_statistics=3,
    raise_departure=2.0, raise_statistics=1, raise_departing_statistics=1, raise_persistent_minutes=0,
    clear_departure=1.0, clear_share_of_peak=0.0, reraise_departure=4.0, reraise_share_of_peak=0.0, reraise_minutes=1,
)  # fmt: skip
# As SIGNED, but raised while the two statistics departing most do so by 2 on average, and raised
# again after a clear by signature only in the second minute in a row departing by 4.
AVERAGED = replace(SIGNED, raise_statistics=2, reraise_minutes=2)
# As SIGNED, but a signature statistic is back within a fifth of its peak, and raised again only
# at half its peak.
PEAKED = replace(SIGNED, clear_share_of_peak=0.2, reraise_share_of_peak=0.5)


def diag(minute: int, label: str, distance: float = 0.5, margin: float | None = 0.25, case: str = "c1"):
    return MinuteDiagnosis(minute, label, distance, margin, case)


def quiet() -> np.ndarray:
    """Departures of a node back at its network's normal: every statistic within 1 unit."""
    return np.random.default_rng(0).uniform(-0.8, 0.8, NUM_FEATURES).astype(np.float32)


def hot(*columns: tuple[int, float]) -> np.ndarray:
    """Quiet departures except the given (column, departure) pairs."""
    departure = quiet()
    for column, value in columns:
        departure[column] = value
    return departure


# The fault's signature: columns 20 (-8), 10 (+6) and 30 (+4) depart; 50 is a bystander.
FAULTY = hot((10, 6.0), (20, -8.0), (30, 4.0))
# A storm's signature at its height, and its tail: each statistic under a fifth of that height,
# though above clear_departure (1) and, for column 20, above reraise_departure (4).
STORM = hot((10, 30.0), (20, -40.0), (30, 20.0))
TAIL = hot((10, 5.0), (20, -7.0), (30, 3.0))


def feed(
    life: NodeLifeCycle,
    labels: list[str],
    start: int,
    options: LifeCycleOptions = PLAIN,
    departures: list[np.ndarray | None] | None = None,
) -> list[list[Transition]]:
    """Observes one label a minute from start; the transitions of each minute."""
    out = []
    for i, label in enumerate(labels):
        departure = departures[i] if departures is not None else None
        out.append(life.observe(diag(start + i, label), departure, options, VERSION))
    return out


def flat(per_minute: list[list[Transition]]) -> list[tuple[str, str, int, int]]:
    """(kind, label, start_minute, end_minute) of every transition, in order."""
    return [
        (t.kind, t.incident.label, t.incident.start_minute, t.end_minute) for ts in per_minute for t in ts
    ]


# -- raising ----------------------------------------------------------------------------


def test_one_or_two_fault_minutes_among_normal_ones_raise_nothing():
    life = NodeLifeCycle(6)
    labels = [NORMAL, FAULT, NORMAL, NORMAL, FAULT, FAULT, NORMAL, NORMAL, FAULT, NORMAL, FAULT, NORMAL]
    assert flat(feed(life, labels, T0)) == []
    assert life.incident is None


def test_fault_raised_on_the_minute_it_holds_raise_minutes_of_the_last_of_last_minutes():
    life = NodeLifeCycle(6)
    per_minute = feed(life, [NORMAL, FAULT, NORMAL, FAULT, FAULT], T0)
    assert flat(per_minute) == []
    [onset] = life.observe(diag(T0 + 5, FAULT), None, PLAIN, VERSION)
    assert onset.kind == "onset"
    assert onset.end_minute == -1
    assert onset.incident.label == FAULT
    assert onset.incident.model_version == VERSION
    assert life.incident is onset.incident


def test_onset_start_is_the_first_supporting_minute_with_mean_distance_margin_and_most_common_case():
    life = NodeLifeCycle(6)
    life.observe(MinuteDiagnosis(T0, NORMAL, 0.1, 0.9, "n"), None, PLAIN, VERSION)
    life.observe(MinuteDiagnosis(T0 + 1, FAULT, 1.0, 0.2, "a"), None, PLAIN, VERSION)
    life.observe(MinuteDiagnosis(T0 + 2, FAULT, 2.0, None, "b"), None, PLAIN, VERSION)
    life.observe(MinuteDiagnosis(T0 + 3, NORMAL, 0.1, 0.9, "n"), None, PLAIN, VERSION)
    life.observe(MinuteDiagnosis(T0 + 4, FAULT, 3.0, 0.4, "b"), None, PLAIN, VERSION)
    [onset] = life.observe(MinuteDiagnosis(T0 + 5, FAULT, 6.0, 0.6, "a"), None, PLAIN, VERSION)
    incident = onset.incident
    assert incident.start_minute == T0 + 1
    assert incident.incident_id == f"{FAULT}@{T0 + 1}"
    assert incident.supporting_minutes == 4
    assert incident.distance == pytest.approx((1.0 + 2.0 + 3.0 + 6.0) / 4)
    assert incident.margin == pytest.approx((0.2 + 0.4 + 0.6) / 3)  # a minute with no margin is left out
    assert incident.case_id in ("a", "b")  # a tie (two each): either most common case
    assert incident.signature == [] and incident.departures == []


def test_onset_case_id_is_the_most_common_case_of_the_supporting_minutes():
    life = NodeLifeCycle(6)
    for i, case in enumerate(["x", "y", "z", "y"]):
        transitions = life.observe(MinuteDiagnosis(T0 + i, FAULT, 1.0, None, case), None, PLAIN, VERSION)
    [onset] = transitions
    assert onset.incident.case_id == "y"  # not the first minute's case: the most common one


def test_onset_with_no_margins_has_no_margin():
    life = NodeLifeCycle(6)
    for i in range(4):
        transitions = life.observe(MinuteDiagnosis(T0 + i, FAULT, 1.0, None, "c"), None, PLAIN, VERSION)
    [onset] = transitions
    assert onset.incident.margin is None
    assert onset.incident.case_id == "c"


def test_unknown_label_raises_like_a_fault():
    life = NodeLifeCycle(6)
    per_minute = feed(life, [UNKNOWN, NORMAL, UNKNOWN, UNKNOWN, UNKNOWN], T0)
    assert flat(per_minute) == [("onset", UNKNOWN, T0, -1)]
    assert per_minute[-1][0].incident.incident_id == f"{UNKNOWN}@{T0}"


def test_two_faults_each_short_of_raise_minutes_raise_nothing():
    life = NodeLifeCycle(6)
    assert flat(feed(life, [FAULT, OTHER, FAULT, OTHER, FAULT, OTHER, FAULT, OTHER], T0)) == []


# -- clearing ---------------------------------------------------------------------------


def test_cleared_only_after_clear_minutes_consecutive_normal_minutes():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 6, T0)
    per_minute = feed(life, [NORMAL] * 4, T0 + 6)
    assert flat(per_minute) == []
    assert life.incident is not None
    [abated] = life.observe(diag(T0 + 10, NORMAL), None, PLAIN, VERSION)
    assert abated.kind == "abated"
    assert abated.end_minute == T0 + 6  # the first minute of the normal run
    assert abated.incident.label == FAULT and abated.incident.start_minute == T0
    assert life.incident is None


def test_a_fault_minute_inside_the_normal_run_restarts_the_count():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 6, T0)
    # Three normal minutes, a fault minute, then four normal ones: no clear yet.
    per_minute = feed(life, [NORMAL, NORMAL, NORMAL, FAULT, NORMAL, NORMAL, NORMAL, NORMAL], T0 + 6)
    assert flat(per_minute) == []
    assert life.incident is not None
    [abated] = life.observe(diag(T0 + 14, NORMAL), None, PLAIN, VERSION)
    assert abated.kind == "abated"
    assert abated.end_minute == T0 + 10  # the first normal minute after the interruption


def test_an_unknown_minute_inside_the_normal_run_restarts_the_count():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 5, T0)
    per_minute = feed(life, [NORMAL, NORMAL, UNKNOWN, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL], T0 + 5)
    assert flat(per_minute) == [("abated", FAULT, T0, T0 + 8)]
    assert per_minute[-1] != []  # on the fifth normal minute in a row


def test_a_whole_episode_gives_exactly_one_onset_and_one_abated():
    life = NodeLifeCycle(6)
    labels = (
        [NORMAL] * 10
        + [FAULT, NORMAL, FAULT, FAULT, FAULT]  # flicker then onset
        + [FAULT, UNKNOWN, FAULT] * 5  # the fault, with an unknown minute now and then
        + [NORMAL, NORMAL, FAULT, NORMAL]  # recovering, one relapse minute
        + [NORMAL] * 30
    )
    transitions = flat(feed(life, labels, T0))
    assert transitions == [("onset", FAULT, T0 + 10, -1), ("abated", FAULT, T0 + 10, T0 + 33)]
    assert life.incident is None


def test_episode_transitions_carry_the_same_incident():
    life = NodeLifeCycle(6)
    per_minute = feed(life, [FAULT] * 8 + [NORMAL] * 5, T0)
    onset, abated = [t for ts in per_minute for t in ts]
    assert onset.incident is abated.incident
    assert abated.incident.incident_id == f"{FAULT}@{T0}"


def test_a_minute_without_a_diagnosis_does_not_break_the_normal_run():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 6, T0)
    feed(life, [NORMAL] * 2, T0 + 6)
    # T0 + 8 brings no diagnosis: the run is counted by the clock, T0 + 6 .. T0 + 10.
    assert flat(feed(life, [NORMAL], T0 + 9)) == []
    [abated] = life.observe(diag(T0 + 10, NORMAL), None, PLAIN, VERSION)
    assert (abated.kind, abated.end_minute) == ("abated", T0 + 6)


def test_a_silence_longer_than_max_silent_minutes_restarts_the_normal_run():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 6, T0)
    feed(life, [NORMAL] * 2, T0 + 6)
    # Silent from T0 + 8 for longer than MAX_SILENT_MINUTES: the run starts again when it is back.
    back = T0 + 8 + MAX_SILENT_MINUTES + 1
    assert flat(feed(life, [NORMAL] * 4, back)) == []
    assert life.incident is not None and life.incident.first_normal_minute == back
    [abated] = life.observe(diag(back + 4, NORMAL), None, PLAIN, VERSION)
    assert (abated.kind, abated.end_minute) == ("abated", back)


def test_a_diagnosed_normal_run_clears_after_clear_minutes():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    # Diagnosed normal, the signature back too: clear_minutes (3) are enough.
    assert flat(feed(life, [NORMAL] * 2, T0 + 4, SIGNED, [quiet()] * 2)) == []
    [abated] = life.observe(diag(T0 + 6, NORMAL), quiet(), SIGNED, VERSION)
    assert (abated.kind, abated.end_minute) == ("abated", T0 + 4)
    assert life.suppressed == ""


def test_a_signature_only_run_needs_signature_clear_minutes():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    # The diagnoses still name the fault: clear_minutes (3) of signature back do not clear it.
    assert flat(feed(life, [FAULT] * 6, T0 + 4, SIGNED, [quiet()] * 6)) == []
    assert life.incident is not None and life.incident.first_normal_minute == T0 + 4  # a 6-minute run
    [abated] = life.observe(diag(T0 + 10, FAULT), quiet(), SIGNED, VERSION)  # the 7th minute
    assert (abated.kind, abated.end_minute) == ("abated", T0 + 4)
    assert life.suppressed == FAULT


def test_a_run_that_counted_a_minute_by_signature_needs_signature_clear_minutes():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    # The run's first minute is back by signature alone; the normal diagnoses after it do not
    # make it a diagnosed-normal run.
    per_minute = feed(life, [FAULT] + [NORMAL] * 5, T0 + 4, SIGNED, [quiet()] * 6)
    assert flat(per_minute) == []
    assert life.incident is not None and life.incident.run_by_signature
    [abated] = life.observe(diag(T0 + 10, NORMAL), quiet(), SIGNED, VERSION)
    assert (abated.kind, abated.end_minute) == ("abated", T0 + 4)
    assert life.suppressed == ""  # the last minute was diagnosed normal


# -- change of fault --------------------------------------------------------------------


def test_change_of_fault_ends_the_incident_at_the_new_fault_and_raises_it():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 6, T0)
    # OTHER takes over: it changes the incident once it is every one of the last 6 diagnoses.
    per_minute = feed(life, [OTHER] * 5, T0 + 6)
    assert flat(per_minute) == []
    assert life.incident is not None and life.incident.label == FAULT
    transitions = life.observe(diag(T0 + 11, OTHER), None, PLAIN, VERSION)
    assert [(t.kind, t.incident.label, t.incident.start_minute, t.end_minute) for t in transitions] == [
        ("abated", FAULT, T0, T0 + 6),
        ("onset", OTHER, T0 + 6, -1),
    ]
    assert life.incident is transitions[1].incident


def test_no_change_while_the_raised_fault_is_still_among_the_recent_diagnoses():
    life = NodeLifeCycle(6)
    options = LifeCycleOptions(raise_minutes=3, of_last_minutes=6, clear_minutes=5)
    feed(life, [FAULT] * 3, T0, options)
    # OTHER comes to hold 3, 4, then 5 of the last 6 minutes, past raise_minutes, but FAULT is
    # still among them: the raised one stays.
    assert flat(feed(life, [OTHER] * 5, T0 + 3, options)) == []
    assert life.incident is not None and life.incident.label == FAULT
    [abated, onset] = life.observe(diag(T0 + 8, OTHER), None, options, VERSION)
    assert (abated.kind, abated.end_minute) == ("abated", T0 + 3)
    assert (onset.kind, onset.incident.label, onset.incident.start_minute) == ("onset", OTHER, T0 + 3)


def test_fault_replacing_unknown_changes_the_incident():
    life = NodeLifeCycle(6)
    per_minute = feed(life, [UNKNOWN] * 4 + [FAULT] * 6 + [NORMAL] * 5, T0)
    assert flat(per_minute) == [
        ("onset", UNKNOWN, T0, -1),
        ("abated", UNKNOWN, T0, T0 + 4),
        ("onset", FAULT, T0 + 4, -1),
        ("abated", FAULT, T0 + 4, T0 + 10),
    ]
    assert per_minute[9] != []  # the change on FAULT's 6th minute in a row


def test_a_diagnosis_wavering_between_two_faults_does_not_split_the_incident():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0)
    # Every other minute, then five minutes in six: OTHER holds raise_minutes of the last 6, but
    # FAULT is always among them.
    labels = [OTHER, FAULT] * 6 + ([OTHER] * 5 + [FAULT]) * 3
    assert flat(feed(life, labels, T0 + 4)) == []
    assert life.incident is not None and life.incident.label == FAULT
    assert life.incident.start_minute == T0


def test_a_persistent_other_fault_changes_the_incident():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0)
    feed(life, [OTHER, FAULT] * 3, T0 + 4)
    # OTHER alone from T0 + 10: on its 6th minute it is every recent diagnosis.
    per_minute = feed(life, [OTHER] * 6, T0 + 10)
    assert flat(per_minute) == [("abated", FAULT, T0, T0 + 10), ("onset", OTHER, T0 + 10, -1)]
    assert per_minute[-1] != []
    onset = per_minute[-1][1]
    assert onset.incident.supporting_minutes == 6  # the wavering minutes before do not count


# -- signatures (departures from the network's normal) ---------------------------------


def test_no_raise_while_the_newest_departure_is_back_to_normal():
    life = NodeLifeCycle(6)
    # The window still holds the fault, but the node's newest minutes are at normal.
    per_minute = feed(life, [FAULT] * 8, T0, SIGNED, [quiet()] * 8)
    assert flat(per_minute) == []
    assert life.incident is None
    # Once the newest minutes depart, it is raised, from the first supporting minute in view.
    [onset] = life.observe(diag(T0 + 8, FAULT), FAULTY, SIGNED, VERSION)
    assert onset.kind == "onset"
    assert onset.incident.start_minute == T0 + 3


def test_a_label_held_on_quiet_traffic_is_not_raised_when_another_condition_departs():
    life = NodeLifeCycle(6)
    # Normal traffic mistaken for OTHER (at a time of day no normal case covers) stays below the gate.
    assert flat(feed(life, [OTHER] * 6, T0, SIGNED, [quiet()] * 6)) == []
    # FAULT begins: its departures open the gate while OTHER still holds most recent minutes.
    per_minute = feed(life, [FAULT] * 4, T0 + 6, SIGNED, [FAULTY] * 4)
    assert flat(per_minute) == [("onset", FAULT, T0 + 6, -1)]
    assert per_minute[-1] != []  # raised once FAULT holds raise_minutes, never as OTHER


def test_signature_is_the_top_signature_statistics_columns_by_absolute_departure():
    life = NodeLifeCycle(6)
    departure = hot((10, 6.0), (20, -8.0), (30, 4.0), (40, -3.0))
    per_minute = feed(life, [FAULT] * 4, T0, SIGNED, [departure] * 4)
    [onset] = per_minute[-1]
    assert onset.incident.signature == [20, 10, 30]
    assert onset.incident.departures == pytest.approx([-8.0, 6.0, 4.0])
    assert all(type(c) is int for c in onset.incident.signature)
    assert all(type(d) is float for d in onset.incident.departures)


def test_signature_is_left_empty_without_departures_and_with_raise_departure_zero():
    off = LifeCycleOptions(raise_minutes=4, of_last_minutes=6, clear_minutes=5, raise_departure=0.0,
                           clear_departure=0.0)  # fmt: skip
    life = NodeLifeCycle(6)
    # raise_departure 0 turns signatures off: quiet departures do not hold the onset back.
    [onset] = feed(life, [FAULT] * 4, T0, off, [quiet()] * 4)[-1]
    assert onset.incident.signature == [] and onset.incident.departures == []


def test_cleared_by_signature_while_the_diagnoses_still_say_the_fault():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    assert life.incident is not None
    # The traffic is back to normal; the window (an hour long) still says the fault: the
    # signature must stay back for signature_clear_minutes (7).
    per_minute = feed(life, [FAULT] * 6, T0 + 4, SIGNED, [quiet()] * 6)
    assert flat(per_minute) == []
    [abated] = life.observe(diag(T0 + 10, FAULT), quiet(), SIGNED, VERSION)
    assert (abated.kind, abated.incident.label, abated.end_minute) == ("abated", FAULT, T0 + 4)
    assert life.incident is None
    assert life.suppressed == FAULT
    assert life.suppressed_signature == [20, 10, 30]


def test_signature_clear_run_restarts_when_a_signature_statistic_departs_again():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    # Column 30 departs past clear_departure (1), though short of raise_departure (2).
    departures = [quiet()] * 6 + [hot((30, 1.5))] + [quiet()] * 6
    assert flat(feed(life, [FAULT] * 13, T0 + 4, SIGNED, departures)) == []
    [abated] = life.observe(diag(T0 + 17, FAULT), quiet(), SIGNED, VERSION)
    assert abated.end_minute == T0 + 11


def test_a_bystander_statistic_departing_does_not_hold_a_signature_clear_back():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    per_minute = feed(life, [FAULT] * 7, T0 + 4, SIGNED, [hot((50, 9.0))] * 7)
    assert flat(per_minute) == [("abated", FAULT, T0, T0 + 4)]
    assert per_minute[-1] != []


def test_after_a_signature_clear_the_label_is_not_raised_again_while_diagnoses_hold_it():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    feed(life, [FAULT] * 7, T0 + 4, SIGNED, [quiet()] * 7)  # abated at T0 + 10
    assert life.incident is None and life.suppressed == FAULT
    # The window goes on saying the fault for most of an hour; a bystander statistic departing
    # (not one of the signature's) is not the fault coming back, nor is a signature statistic
    # departing past raise_departure (2) but short of reraise_departure (4).
    departures = [quiet()] * 20 + [hot((50, 9.0))] * 10 + [hot((10, 3.9))] * 5
    assert flat(feed(life, [FAULT] * 35, T0 + 11, SIGNED, departures)) == []
    assert life.incident is None and life.suppressed == FAULT


def test_after_a_signature_clear_the_label_is_raised_again_when_its_signature_departs_again():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    feed(life, [FAULT] * 7, T0 + 4, SIGNED, [quiet()] * 7)  # abated at T0 + 10
    assert life.suppressed == FAULT
    assert flat(feed(life, [FAULT] * 5, T0 + 11, SIGNED, [quiet()] * 5)) == []
    # A signature statistic departs by reraise_departure (4) exactly.
    [onset] = life.observe(diag(T0 + 16, FAULT), hot((10, -4.0)), SIGNED, VERSION)
    assert onset.kind == "onset"
    assert onset.incident.label == FAULT
    assert onset.incident.start_minute == T0 + 11
    assert onset.incident.signature[0] == 10
    assert life.suppressed == ""


def test_one_statistic_departing_alone_raises_nothing_when_raise_statistics_are_averaged():
    life = NodeLifeCycle(6)
    # A sparse count ticks: one statistic at 3, the rest quiet (within 0.8): averaged over the
    # two departing most, short of 2.
    assert flat(feed(life, [FAULT] * 6, T0, AVERAGED, [hot((10, 3.0))] * 6)) == []
    # Two statistics departing by 2.5 and 1.6 average 2.05: raised.
    [onset] = life.observe(diag(T0 + 6, FAULT), hot((10, 2.5), (20, -1.6)), AVERAGED, VERSION)
    assert onset.kind == "onset"
    assert onset.incident.signature[:2] == [10, 20]


def test_one_event_two_statistics_count_raises_nothing_until_a_third_departs():
    # Averaged over the five departing most, of which three must depart beyond 1.
    five = replace(SIGNED, signature_statistics=5, raise_statistics=5, raise_departing_statistics=3)
    life = NodeLifeCycle(6)
    # A REGISTER answered 408 and its timer F expiry: 4.6 each, the rest within 0.8, which
    # averages over 2 (the mean of the five departing most) with two statistics beyond 1.
    one_event = hot((10, 4.6), (20, 4.6))
    assert np.sort(np.abs(one_event))[-5:].mean() >= 2.0
    assert flat(feed(life, [FAULT] * 6, T0, five, [one_event] * 6)) == []
    [onset] = life.observe(diag(T0 + 6, FAULT), hot((10, 4.6), (20, 4.6), (30, 1.5)), five, VERSION)
    assert onset.kind == "onset" and onset.incident.signature[:3] == [10, 20, 30]


def test_one_statistic_departing_minute_after_minute_raises_on_its_own():
    persistent = replace(AVERAGED, raise_persistent_minutes=5)
    life = NodeLifeCycle(6)
    # One statistic at 3 (averaged with the next, short of 2) for four minutes: nothing yet.
    assert flat(feed(life, [FAULT] * 4, T0, persistent, [hot((10, 3.0))] * 4)) == []
    assert life.departing_runs == {10: 4}
    [onset] = life.observe(diag(T0 + 4, FAULT), hot((10, 3.0)), persistent, VERSION)
    assert onset.kind == "onset" and onset.incident.signature[0] == 10


def test_a_skipped_minute_or_a_quiet_one_starts_the_persistent_count_again():
    persistent = replace(AVERAGED, raise_persistent_minutes=5)
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, persistent, [hot((10, 3.0))] * 4)
    feed(life, [FAULT] * 4, T0 + 5, persistent, [hot((10, 3.0))] * 4)  # T0 + 4 never came
    assert life.departing_runs == {10: 4} and life.incident is None
    feed(life, [FAULT], T0 + 9, persistent, [quiet()])
    assert life.departing_runs == {}
    # A minute without a baseline (no departures) counts nothing.
    feed(life, [FAULT] * 3, T0 + 10, persistent, [hot((10, 3.0))] * 3)
    assert life.departing_runs == {10: 3}
    feed(life, [FAULT], T0 + 13, persistent, [None])
    assert life.departing_runs == {}


def test_after_a_signature_clear_the_label_is_raised_again_only_after_reraise_minutes_in_a_row():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, AVERAGED, [FAULTY] * 4)
    feed(life, [FAULT] * 7, T0 + 4, AVERAGED, [quiet()] * 7)  # abated at T0 + 10
    assert life.suppressed == FAULT
    # The signature flares for a minute at a time: no new incident.
    flares = [FAULTY, quiet()] * 4
    assert flat(feed(life, [FAULT] * 8, T0 + 11, AVERAGED, flares)) == []
    assert life.reraise_run == 0
    # Two minutes in a row: raised again.
    assert flat(feed(life, [FAULT], T0 + 19, AVERAGED, [FAULTY])) == []
    assert life.reraise_run == 1
    [onset] = life.observe(diag(T0 + 20, FAULT), FAULTY, AVERAGED, VERSION)
    assert onset.kind == "onset" and life.suppressed == "" and life.reraise_run == 0


def test_a_decaying_fault_clears_by_signature_within_clear_share_of_peak():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, PEAKED, [FAULTY] * 4)
    feed(life, [FAULT] * 3, T0 + 4, PEAKED, [STORM] * 3)
    assert life.incident is not None and life.incident.peaks == pytest.approx([40.0, 30.0, 20.0])
    per_minute = feed(life, [FAULT] * 7, T0 + 7, PEAKED, [TAIL] * 7)
    assert flat(per_minute) == [("abated", FAULT, T0, T0 + 7)]
    assert per_minute[-1] != []
    assert life.suppressed_peaks == pytest.approx([40.0, 30.0, 20.0])
    # Without a share of the peak, the tail holds the incident open.
    held = NodeLifeCycle(6)
    feed(held, [FAULT] * 7, T0, SIGNED, [FAULTY] * 4 + [STORM] * 3)
    assert flat(feed(held, [FAULT] * 7, T0 + 7, SIGNED, [TAIL] * 7)) == []


def test_the_tail_of_a_cleared_fault_raises_nothing_below_reraise_share_of_peak():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 14, T0, PEAKED, [FAULTY] * 4 + [STORM] * 3 + [TAIL] * 7)
    assert life.incident is None and life.suppressed == FAULT
    # Column 20 departs by 19: past reraise_departure (4), short of half its peak (20).
    assert flat(feed(life, [FAULT] * 10, T0 + 14, PEAKED, [hot((20, -19.0))] * 10)) == []
    [onset] = life.observe(diag(T0 + 24, FAULT), hot((20, -20.0)), PEAKED, VERSION)
    assert onset.kind == "onset" and life.suppressed_peaks == []


def test_suppression_lifts_once_the_diagnoses_return_to_normal():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    feed(life, [FAULT] * 7, T0 + 4, SIGNED, [quiet()] * 7)  # abated at T0 + 10
    assert life.suppressed == FAULT
    # Normal diagnoses: the suppression holds until the fault has not been diagnosed for 6 minutes.
    feed(life, [NORMAL] * 5, T0 + 11, SIGNED, [quiet()] * 5)
    assert life.suppressed == FAULT
    feed(life, [NORMAL], T0 + 16, SIGNED, [quiet()])
    assert life.suppressed == ""
    # The same fault, departing on other statistics than before, is a new incident.
    per_minute = feed(life, [FAULT] * 4, T0 + 17, SIGNED, [hot((50, 9.0))] * 4)
    assert flat(per_minute) == [("onset", FAULT, T0 + 17, -1)]
    assert per_minute[-1][0].incident.signature[0] == 50


def test_normal_diagnoses_clear_a_signed_incident_without_suppressing_it():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    # Diagnosed normal while the signature still departs: clear_minutes (3) clear all the same.
    per_minute = feed(life, [NORMAL] * 3, T0 + 4, SIGNED, [FAULTY] * 3)
    assert flat(per_minute) == [("abated", FAULT, T0, T0 + 4)]
    assert per_minute[-1] != []
    assert life.suppressed == ""


def test_departure_missing_for_a_minute_falls_back_to_the_diagnoses():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    # No baseline this minute: the fault diagnosis is not back to normal, the run restarts.
    departures: list[np.ndarray | None] = [quiet()] * 6 + [None] + [quiet()] * 7
    per_minute = feed(life, [FAULT] * 14, T0 + 4, SIGNED, departures)
    assert flat(per_minute) == [("abated", FAULT, T0, T0 + 11)]
    assert per_minute[-1] != []  # on the 7th minute back after the one without a baseline


# -- resends ----------------------------------------------------------------------------


def test_a_minute_at_or_before_the_last_one_changes_nothing():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 3, T0)
    before = json.dumps(life.to_dict())
    assert life.observe(diag(T0 + 2, FAULT), None, PLAIN, VERSION) == []  # a resend
    assert life.observe(diag(T0, FAULT), None, PLAIN, VERSION) == []  # a late answer
    assert life.observe(diag(T0 - 100, FAULT), None, PLAIN, VERSION) == []
    assert json.dumps(life.to_dict()) == before
    assert life.last_minute == T0 + 2
    # The 4th fault minute is still the one that raises.
    [onset] = life.observe(diag(T0 + 3, FAULT), None, PLAIN, VERSION)
    assert onset.incident.supporting_minutes == 4


def test_a_resent_normal_minute_does_not_count_twice_towards_a_clear():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0)
    for minute in range(T0 + 4, T0 + 8):
        assert life.observe(diag(minute, NORMAL), None, PLAIN, VERSION) == []
        assert life.observe(diag(minute, NORMAL), None, PLAIN, VERSION) == []
    assert life.incident is not None
    assert life.last_minute - life.incident.first_normal_minute + 1 == 4


# -- state as JSON ----------------------------------------------------------------------

EPISODE = (
    [NORMAL] * 3
    + [FAULT, FAULT, NORMAL, FAULT, FAULT]  # onset
    + [FAULT] * 4
    + [OTHER] * 6  # OTHER alone for of_last_minutes: change of fault
    + [OTHER] * 7  # signature back to normal: abated by signature, suppressed
    + [OTHER] * 3
    + [OTHER] * 2  # the signature departs again by reraise_departure, two minutes in a row: onset
    + [NORMAL] * 5  # abated after clear_minutes
    + [UNKNOWN] * 4  # onset of unknown
)
EPISODE_DEPARTURES = (
    [quiet()] * 3
    + [FAULTY] * 5
    + [FAULTY] * 4
    + [hot((50, 9.0), (60, 7.0))] * 6
    + [quiet()] * 7
    + [quiet()] * 3
    + [hot((60, -4.0))] * 2
    + [hot((60, -4.0))] * 5
    + [hot((70, 3.0))] * 4
)


# The episode's options: SIGNED, raised again after a clear by signature in two minutes in a row,
# with shares of the peak.
EPISODIC = replace(
    SIGNED, reraise_minutes=2, clear_share_of_peak=0.2, reraise_share_of_peak=0.5, raise_persistent_minutes=3
)


def record(per_minute: list[list[Transition]]) -> list[tuple[str, dict, int]]:
    """Transitions as plain values, taken when they happen (the monitor writes them at once)."""
    return [(t.kind, asdict(t.incident), t.end_minute) for ts in per_minute for t in ts]


def run_episode(restore_at: int | None) -> list[tuple[str, dict, int]]:
    life = NodeLifeCycle(6)
    seen = []
    for i, (label, departure) in enumerate(zip(EPISODE, EPISODE_DEPARTURES, strict=True)):
        if i == restore_at:
            life = NodeLifeCycle.from_dict(json.loads(json.dumps(life.to_dict())), 6)
        seen += record([life.observe(diag(T0 + i, label, 0.1 * i, 0.01 * i, f"c{i % 3}"), departure, EPISODIC,
                                     VERSION)])  # fmt: skip
    return seen


def test_the_episode_exercises_every_kind_of_transition():
    kinds = [(kind, incident["label"], end) for kind, incident, end in run_episode(None)]
    assert kinds == [
        ("onset", FAULT, -1),
        ("abated", FAULT, T0 + 12),
        ("onset", OTHER, -1),
        ("abated", OTHER, T0 + 18),
        ("onset", OTHER, -1),
        ("abated", OTHER, T0 + 30),
        ("onset", UNKNOWN, -1),
    ]


@pytest.mark.parametrize("restore_at", range(len(EPISODE)))
def test_restoring_from_json_at_any_minute_gives_the_same_transitions(restore_at):
    assert run_episode(restore_at) == run_episode(None)


def test_to_dict_is_plain_json_and_round_trips_mid_episode():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, SIGNED, [FAULTY] * 4)
    feed(life, [FAULT] * 2, T0 + 4, SIGNED, [quiet()] * 2)  # two minutes into a signature clear
    state = life.to_dict()
    text = json.dumps(state)
    restored = NodeLifeCycle.from_dict(json.loads(text), 6)
    assert restored.to_dict() == json.loads(text)
    assert restored.incident == life.incident
    assert list(restored.recent) == list(life.recent)
    assert (restored.last_minute, restored.since_minute) == (life.last_minute, life.since_minute)


def test_from_dict_keeps_only_the_newest_of_last_minutes_diagnoses():
    life = NodeLifeCycle(10)
    feed(life, [FAULT, FAULT, FAULT, NORMAL, NORMAL, NORMAL, NORMAL, FAULT, FAULT, FAULT], T0)
    restored = NodeLifeCycle.from_dict(json.loads(json.dumps(life.to_dict())), 6)
    assert [d.minute for d in restored.recent] == list(range(T0 + 4, T0 + 10))


def test_from_dict_of_a_fresh_node():
    restored = NodeLifeCycle.from_dict(json.loads(json.dumps(NodeLifeCycle(6).to_dict())), 6)
    assert restored.incident is None and restored.last_minute == -1 and not restored.recent
    assert flat(feed(restored, [FAULT] * 4, T0)) == [("onset", FAULT, T0, -1)]


# -- options ----------------------------------------------------------------------------


def test_default_options_are_valid():
    options = LifeCycleOptions()
    assert options.raise_minutes <= options.of_last_minutes
    assert 0 <= options.clear_departure <= options.raise_departure <= options.reraise_departure


@pytest.mark.parametrize(
    "kwargs",
    [
        {"raise_minutes": 7, "of_last_minutes": 6},
        {"raise_minutes": 0},
        {"raise_minutes": -1},
        {"of_last_minutes": 0, "raise_minutes": 0},
        {"clear_minutes": 0},
        {"signature_clear_minutes": 0},
        {"signature_statistics": 0},
        {"reraise_minutes": 0},
        {"raise_persistent_minutes": -1},
        {"raise_departing_statistics": -1},
        {"clear_share_of_peak": 1.0},
        {"clear_share_of_peak": -0.1},
        {"reraise_share_of_peak": 1.5},
        {"raise_statistics": 0},
        {"raise_statistics": 4, "signature_statistics": 3},
        {"clear_departure": -0.5, "raise_departure": 2.0, "reraise_departure": 3.0},
        {"clear_departure": 2.5, "raise_departure": 2.0, "reraise_departure": 3.0},
        {"clear_departure": 1.0, "raise_departure": 3.5, "reraise_departure": 3.0},
        {"clear_departure": 1.0, "raise_departure": 0.0, "reraise_departure": 3.0},
    ],
)
def test_options_reject_bad_values(kwargs):
    with pytest.raises(ValueError):
        LifeCycleOptions(**kwargs)


@pytest.mark.parametrize(
    ("clear", "raise_", "reraise"), [(0.0, 0.0, 0.0), (0.0, 0.0, 3.0), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0)]
)
def test_options_accept_rising_departures(clear, raise_, reraise):
    options = LifeCycleOptions(clear_departure=clear, raise_departure=raise_, reraise_departure=reraise)
    assert (options.clear_departure, options.raise_departure, options.reraise_departure) == (
        clear, raise_, reraise,
    )  # fmt: skip


def test_options_accept_raise_minutes_equal_to_of_last_minutes():
    options = LifeCycleOptions(raise_minutes=6, of_last_minutes=6)
    life = NodeLifeCycle(6)
    per_minute = feed(life, [FAULT] * 5 + [NORMAL] + [FAULT] * 6, T0, options)
    assert flat(per_minute) == [("onset", FAULT, T0 + 6, -1)]


# -- suspected bugs ---------------------------------------------------------------------


def test_diagnoses_older_than_of_last_minutes_do_not_count_after_a_gap():
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 3, T0)
    # The node sends nothing diagnosable for an hour (a silence longer than its window).
    transitions = life.observe(diag(T0 + 70, FAULT), None, PLAIN, VERSION)
    assert transitions == []  # 1 fault minute in the last 6 minutes (T0+65 .. T0+70)


def test_a_clear_by_normal_diagnoses_is_not_immediately_re_raised():
    options = LifeCycleOptions(raise_minutes=4, of_last_minutes=6, clear_minutes=2)
    life = NodeLifeCycle(6)
    feed(life, [FAULT] * 4, T0, options)
    feed(life, [NORMAL], T0 + 4, options)
    transitions = life.observe(diag(T0 + 5, NORMAL), None, options, VERSION)
    ids = [(t.kind, t.incident.incident_id) for t in transitions]
    assert ids == [("abated", f"{FAULT}@{T0}")]
