"""The traffic simulator: deterministic per seed, and each fault moves the counters the domain notes name."""

from __future__ import annotations

import numpy as np

from faultprint.traffic.catalogue import FAMILIES, FEATURE_INDEX, FEATURE_NAMES, NUM_FEATURES
from faultprint.traffic.simulator import CONDITIONS, PROFILES, simulate_window, simulate_windows

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
    # A share of the calls that ended in the minute (the data contract): most of them under Rx down.
    assert (
        late(window("rx_pcrf_down"), "kpi_calls_torn_down_within_2s")
        > 0.8
        > 0.02
        > late(normal, "kpi_calls_torn_down_within_2s")
    )
    assert late(window("dns_failure"), "code_local_478") > 20 * max(late(normal, "code_local_478"), 1)


def early(values: np.ndarray, name: str) -> float:
    """Mean over the first 10 minutes, where a spike-shaped fault from minute 0 is strongest."""
    return float(values[:10, FEATURE_INDEX[name]].mean())


def test_the_catalogue_has_the_domain_faults_each_with_an_onset_shape() -> None:
    from faultprint.traffic.simulator import FAULTS, ONSET_SHAPES

    assert len(FAULTS) >= 6 and CONDITIONS[0] == "normal"
    assert {shape for shape, _ in FAULTS.values()} >= {"step", "ramp", "busy_hour", "spike"}
    assert all(shape in ONSET_SHAPES for shape, _ in FAULTS.values())


def test_hss_slow_raises_register_latency_with_few_failures() -> None:
    normal, slow = window("normal"), window("hss_slow")
    assert late(slow, "lat_auth_register_to_200_mean_ms") > 3 * late(
        normal, "lat_auth_register_to_200_mean_ms"
    )
    assert late(slow, "kpi_registration_success_rate") > 0.9


def test_pcscf_overload_answers_503_with_retry_after() -> None:
    normal, overload = window("normal"), window("pcscf_overload")
    assert late(overload, "responses_503_retry_after") > 20 * max(
        late(normal, "responses_503_retry_after"), 1
    )
    assert late(overload, "code_register_503") > 10 * max(late(normal, "code_register_503"), 1)


def test_scscf_partial_down_times_out_a_share_of_requests_at_the_transaction_timer() -> None:
    normal, partial = window("normal"), window("scscf_partial_down")
    assert late(partial, "code_register_408") > 10 * max(late(normal, "code_register_408"), 1)
    assert late(partial, "lat_register_to_failure_mean_ms") > 5000


def test_registration_storm_multiplies_initial_registers_and_empties_the_contacts_gauge() -> None:
    normal, storm = window("normal"), window("registration_storm")
    assert early(storm, "req_register_initial") > 5 * early(normal, "req_register_initial")
    assert early(storm, "gauge_registered_contacts") < 0.5 * early(normal, "gauge_registered_contacts")


def test_packet_loss_retransmits_and_misconfiguration_answers_423() -> None:
    normal = window("normal")
    assert late(window("packet_loss"), "retransmitted_requests") > 10 * late(normal, "retransmitted_requests")
    assert late(window("misconfiguration"), "code_register_423") > 100 > late(normal, "code_register_423")


def test_link_at_capacity_is_a_busy_hour_fault_absent_at_night() -> None:
    from faultprint.traffic.simulator import Episode, simulate_timeline

    profile = PROFILES["metro-eu"]
    rng = np.random.default_rng(4)
    # A whole day from local midnight with the fault present all day: labelled only while loaded.
    _, labels = simulate_timeline(profile, -60, 1440, [Episode("link_at_capacity", 0, 1440)], rng)
    assert (labels[2 * 60 : 5 * 60] == "normal").all()
    assert (labels[10 * 60 : 12 * 60] == "link_at_capacity").all()


def test_a_decaying_fault_is_labelled_while_it_shows_not_through_its_faint_tail() -> None:
    from faultprint.traffic.simulator import Episode, simulate_timeline

    rng = np.random.default_rng(5)
    _, labels = simulate_timeline(
        PROFILES["metro-eu"], 600, 240, [Episode("registration_storm", 30, 180)], rng
    )
    storm = np.flatnonzero(labels == "registration_storm")
    assert storm[0] == 30  # from the spike itself
    assert 15 <= len(storm) <= 50  # until it has decayed to a tenth (decay constant 8-20 min)
    assert (labels[storm[-1] + 1 :] == "normal").all()


def test_node_rows_are_deterministic_and_carry_probe_damage() -> None:
    from faultprint.traffic.simulator import ProbeDamage, simulate_node_rows

    damage = ProbeDamage(missing_minute_rate=0.05, missing_value_rate=0.01, counter_reset_rate=0.01)
    a = simulate_node_rows(PROFILES["rural-eu"], "pcscf-1", 29_000_000, 1440, seed=5, damage=damage)
    b = simulate_node_rows(PROFILES["rural-eu"], "pcscf-1", 29_000_000, 1440, seed=5, damage=damage)
    assert all(np.array_equal(a[k], b[k], equal_nan=k == "values") for k in a)
    assert 1300 < len(a["minute"]) < 1440  # minutes missing
    assert np.isnan(a["values"]).any() and (a["values"] < 0).any()  # lost values, counter resets
    assert set(a["label"]) - {"normal"}, "a day at 6 faults per day has fault minutes"


def test_probe_outages_remove_runs_of_minutes_within_their_lengths() -> None:
    from faultprint.traffic.simulator import ProbeDamage, damage_rows

    values = np.full((20_000, NUM_FEATURES), 0.5)
    damage = ProbeDamage(missing_minute_rate=0.0, outage_rate=0.0005, outage_minutes=(6, 40))
    _, kept = damage_rows(values, damage, np.random.default_rng(3))
    edges = np.flatnonzero(np.diff(np.r_[1, kept.astype(int), 1]))
    runs = edges[1::2] - edges[::2]  # lengths of the runs of absent minutes
    assert 3 <= len(runs) <= 20 and runs.min() >= 6 and runs.max() <= 40 * 2  # outages may touch
    _, kept = damage_rows(values, ProbeDamage(missing_minute_rate=0.0), np.random.default_rng(3))
    assert kept.all()


def test_every_column_of_every_profile_and_condition_obeys_the_data_contract() -> None:
    """Windows as the trainer simulates them, and a node's day of damaged rows with every fault."""
    from faultprint.traffic.contract import count_out_of_contract, describe_counts
    from faultprint.traffic.simulator import FAULTS, Episode, ProbeDamage, damage_rows, simulate_timeline

    damage = ProbeDamage(missing_value_rate=0.01, counter_reset_rate=0.01)
    day = [Episode(fault, 144 * i, 100) for i, fault in enumerate(FAULTS)]
    for i, profile in enumerate(PROFILES.values()):
        windows, labels = simulate_windows(profile, CONDITIONS, 4, seed=20 + i)
        assert set(labels) == set(CONDITIONS)
        counts = count_out_of_contract(windows, "windows")
        assert not counts.any(), f"{profile.name} windows: {describe_counts(counts)}"
        rng = np.random.default_rng(i)
        values, _ = simulate_timeline(profile, 29_000_000, 1440, day, rng)
        rows, _ = damage_rows(values, damage, rng)
        counts = count_out_of_contract(rows, "rows")  # NaN and counter resets are allowed in rows
        assert not counts.any(), f"{profile.name} rows: {describe_counts(counts)}"


def test_random_profiles_differ_and_their_traffic_obeys_the_data_contract() -> None:
    from faultprint.traffic.contract import count_out_of_contract, describe_counts
    from faultprint.traffic.simulator import FAULTS, Episode, random_profile, simulate_timeline

    rng = np.random.default_rng(11)
    profiles = [random_profile(f"r-{i}", rng) for i in range(6)]
    assert len({p.subscribers for p in profiles}) == 6
    assert len({p.register_failure_codes for p in profiles}) == 6
    day = [Episode(fault, 144 * i, 100) for i, fault in enumerate(FAULTS)]
    for profile in profiles:
        values, labels = simulate_timeline(profile, 29_000_000, 1440, day, rng)
        counts = count_out_of_contract(values, "windows")
        assert not counts.any(), f"{profile.name}: {describe_counts(counts)}"
        assert set(labels) - {"normal"}


def test_a_misconfiguration_brings_the_code_its_profile_draws() -> None:
    from dataclasses import replace

    from faultprint.traffic.catalogue import FEATURE_INDEX
    from faultprint.traffic.simulator import MISCONFIGURATION_CODES, Episode, simulate_timeline

    column = {"register_423": "code_register_423", "register_420": "code_register_420",
              "invite_420": "code_invite_420", "invite_488": "code_invite_488",
              "local_478": "code_local_478"}  # fmt: skip
    assert set(column) == set(MISCONFIGURATION_CODES)
    busy = 600  # UTC minute 600 is the busy morning of metro-eu
    for code, name in column.items():
        profile = replace(PROFILES["metro-eu"], misconfiguration_codes=(code,))
        healthy, _ = simulate_timeline(profile, busy, 60, [], np.random.default_rng(1))
        broken, _ = simulate_timeline(profile, busy, 60, [Episode("misconfiguration", 0, 60)],
                                      np.random.default_rng(1))  # fmt: skip
        rises = {n: broken[:, i].sum() / max(healthy[:, i].sum(), 1.0) for n, i in
                 ((n, FEATURE_INDEX[n]) for n in column.values())}  # fmt: skip
        assert max(rises, key=rises.__getitem__) == name, (code, rises)


def test_packet_loss_makes_latency_bimodal_a_t1_apart() -> None:
    from faultprint.traffic.catalogue import FEATURE_INDEX
    from faultprint.traffic.simulator import Episode, simulate_timeline

    profile = PROFILES["metro-eu"]
    healthy, _ = simulate_timeline(profile, 600, 60, [], np.random.default_rng(2))
    lossy, _ = simulate_timeline(profile, 600, 60, [Episode("packet_loss", 0, 60)], np.random.default_rng(2))
    std, p95 = FEATURE_INDEX["lat_bye_to_200_std_ms"], FEATURE_INDEX["lat_bye_to_200_p95_ms"]
    assert np.median(lossy[:, std]) > 2 * np.median(healthy[:, std])
    assert np.median(lossy[:, p95] - healthy[:, p95]) > 400  # about T1 (500 ms) later
