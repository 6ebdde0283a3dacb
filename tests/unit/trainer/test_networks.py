"""Random simulated networks for transfer, each read relative to its own first day."""

from __future__ import annotations

import numpy as np

from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.simulator import CONDITIONS
from faultprint.traffic.windowing import WindowingOptions
from faultprint.trainer.networks import normalise_by_first_day, simulate_random_networks


def test_random_networks_are_cut_from_rows_and_differ_in_size() -> None:
    cut = simulate_random_networks(3, nodes=2, days=2, faults_per_day=8.0, conditions=CONDITIONS, seed=5)
    assert sorted(set(cut.network)) == ["sim-0", "sim-1", "sim-2"]
    assert set(cut.node) == {"pcscf-0", "pcscf-1"}
    assert len(set(cut.labels)) > 3
    again = simulate_random_networks(3, nodes=2, days=2, faults_per_day=8.0, conditions=CONDITIONS, seed=5)
    assert np.array_equal(cut.windows, again.windows), "seeded"
    registrations = [np.median(cut.windows[cut.network == n][..., 0]) for n in ("sim-0", "sim-1", "sim-2")]
    assert max(registrations) > 1.5 * min(registrations)


def test_each_network_is_normalised_by_the_baseline_of_its_own_first_day() -> None:
    cut = simulate_random_networks(2, nodes=2, days=2, faults_per_day=4.0, conditions=CONDITIONS, seed=6)
    normalised = normalise_by_first_day(cut)
    for network in ("sim-0", "sim-1"):
        mine = cut.network == network
        first_day = mine & (cut.start_minute + 60 <= cut.start_minute[mine].min() + 1440)
        expected = NetworkBaseline.fit(cut.windows[first_day]).normalise(cut.windows[mine])
        assert np.array_equal(normalised[mine], expected)
        # Relative to their own normal, both networks' normal traffic sits near zero.
        normal = normalised[mine & (cut.labels == "normal")]
        assert np.abs(np.median(normal[..., :40])) < 0.5


def test_with_onset_minutes_windows_ending_early_in_a_fault_are_kept_with_its_label() -> None:
    strict = simulate_random_networks(2, nodes=2, days=2, faults_per_day=8.0, conditions=CONDITIONS, seed=5)
    onset = simulate_random_networks(2, nodes=2, days=2, faults_per_day=8.0, conditions=CONDITIONS, seed=5,
                                     windowing=WindowingOptions(min_onset_minutes=3))  # fmt: skip
    assert onset.report.dropped_ambiguous < strict.report.dropped_ambiguous
    added = len(onset.labels) - len(strict.labels)
    assert added == strict.report.dropped_ambiguous - onset.report.dropped_ambiguous > 0
    # Every window kept besides the strict ones is a fault's, never normal.
    strict_counts = {c: int((strict.labels == c).sum()) for c in CONDITIONS}
    onset_counts = {c: int((onset.labels == c).sum()) for c in CONDITIONS}
    assert onset_counts["normal"] == strict_counts["normal"]
    assert sum(onset_counts.values()) - sum(strict_counts.values()) == added
