"""Random simulated networks for transfer, each read relative to its own first day."""

from __future__ import annotations

import numpy as np

from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.simulator import CONDITIONS
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
