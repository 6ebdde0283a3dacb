"""The traffic simulator: deterministic per seed, and each fault moves the counters the domain notes name."""

from __future__ import annotations

import numpy as np

from trainer.features import FAMILIES, FEATURE_INDEX, FEATURE_NAMES, NUM_FEATURES
from trainer.simulator import CONDITIONS, PROFILES, simulate_window, simulate_windows

BUSY_HOUR_UTC = 10 * 60  # 11:00 local in metro-eu (UTC+1)


def window(condition: str, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return simulate_window(PROFILES["metro-eu"], BUSY_HOUR_UTC, condition, rng, onset_minute=0)


def late(values: np.ndarray, name: str) -> float:
    """Mean of a statistic over the last 30 minutes, when a fault from minute 0 is established."""
    return float(values[30:, FEATURE_INDEX[name]].mean())


def test_catalogue_is_about_130_unique_statistics_in_the_domain_families() -> None:
    assert 120 <= NUM_FEATURES <= 140
    assert len(set(FEATURE_NAMES)) == NUM_FEATURES
    assert set(FAMILIES) == {"requests", "responses", "codes", "latencies", "reliability", "rx", "gauges",
                             "traffic", "kpis"}  # fmt: skip


def test_same_seed_same_windows_and_values_are_finite_and_non_negative() -> None:
    a, labels_a = simulate_windows(PROFILES["rural-eu"], CONDITIONS, 3, seed=9)
    b, labels_b = simulate_windows(PROFILES["rural-eu"], CONDITIONS, 3, seed=9)
    assert np.array_equal(a, b) and list(labels_a) == list(labels_b)
    assert a.shape == (3 * len(CONDITIONS), 60, NUM_FEATURES) and a.dtype == np.float32
    assert np.isfinite(a).all() and (a >= 0).all()


def test_hss_unreachable_removes_401_challenges_and_fails_registrations_at_the_diameter_timeout() -> None:
    normal, hss = window("normal"), window("hss_unreachable")
    assert late(normal, "code_register_401") > 100 and late(hss, "code_register_401") == 0
    assert late(hss, "code_register_504") > 10 * max(late(normal, "code_register_504"), 1)
    assert late(hss, "lat_register_to_failure_mean_ms") > 4000
    assert (
        late(hss, "kpi_registration_success_rate") < 0.2 < 0.9 < late(normal, "kpi_registration_success_rate")
    )
    assert (
        hss[-1, FEATURE_INDEX["gauge_registered_contacts"]]
        < 0.7 * normal[-1, FEATURE_INDEX["gauge_registered_contacts"]]
    )


def test_link_at_capacity_raises_latency_and_retransmissions() -> None:
    normal, link = window("normal"), window("link_at_capacity")
    assert late(link, "retransmitted_requests") > 5 * late(normal, "retransmitted_requests")
    assert late(link, "lat_invite_to_18x_mean_ms") > 1.3 * late(normal, "lat_invite_to_18x_mean_ms")


def test_rx_down_tears_calls_down_and_dns_failure_answers_478() -> None:
    normal = window("normal")
    assert late(window("rx_pcrf_down"), "kpi_calls_torn_down_within_2s") > 20 * max(
        late(normal, "kpi_calls_torn_down_within_2s"), 1
    )
    assert late(window("dns_failure"), "code_local_478") > 20 * max(late(normal, "code_local_478"), 1)
