"""Seeded simulator of one-minute P-CSCF statistics, for normal traffic and injected faults.

No public P-CSCF dataset exists, so windows are simulated from the shapes in the
domain notes: diurnal load with overdispersed arrivals, registration refresh at
about subscribers/50 per minute, call outcomes, IMS-AKA challenges, Diameter
latencies, and the signature of each fault in the catalogue. A fault is injected
at a random minute, so a window may show only part of it; it still takes the
fault's label, as in the original design. Numpy only: the probe simulator imports
this module without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from faultprint.traffic.catalogue import FEATURE_INDEX, FEATURE_NAMES, NUM_FEATURES, WINDOW_STEPS
from faultprint.traffic.contract import LOWER, UPPER

NORMAL = "normal"


@dataclass(frozen=True)
class NetworkProfile:
    """One operator network: its size, traffic mix and time zone."""

    # Name used as the network id in faultprint.
    name: str
    # Subscribers served by the P-CSCF.
    subscribers: int
    # Call attempts per subscriber in the busy hour.
    busy_hour_call_attempts: float = 0.8
    # Hours ahead of UTC; windows are placed in UTC.
    utc_offset_h: int = 0
    # Fraction of re-registrations the S-CSCF challenges again with 401.
    rereg_challenge_fraction: float = 0.3
    # SMS over IP MESSAGE requests per subscriber per busy hour.
    busy_hour_messages: float = 0.05
    # Vendor choice: shares of failed REGISTERs answered 480, 500 and 504 (the rest).
    register_failure_codes: tuple[float, float] = (0.4, 0.3)
    # Vendor choice: what a misconfiguration after an upgrade introduces; one drawn per episode
    # (see MISCONFIGURATION_CODES).
    misconfiguration_codes: tuple[str, ...] = ("register_423",)
    # Latencies of the core relative to the catalogue's (distance, vendor, dimensioning).
    latency_scale: float = 1.0
    # Seconds a REGISTER waits for the HSS before failing (the Diameter timeout).
    diameter_timeout_s: float = 5.0
    # Each fault episode's intensity is drawn from [fault_intensity_min, 1] of the catalogue's.
    fault_intensity_min: float = 1.0
    # Vendor choice: share of registration storms that overload control answers with 503
    # and Retry-After.
    storm_overload_control: float = 0.0


PROFILES: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        NetworkProfile("metro-eu", 120_000, 0.9, 1, 0.3, 0.05),
        NetworkProfile("rural-eu", 15_000, 0.6, 2, 0.5, 0.02),
        NetworkProfile("island-apac", 40_000, 1.1, 8, 0.1, 0.12),
        NetworkProfile("national-us", 250_000, 0.7, -5, 0.2, 0.08),
    )
}

# Minutes of fault that a faulty window shows at least (the rest may be normal).
MIN_FAULT_MINUTES = 20

# The codes a misconfiguration can bring that a healthy P-CSCF never answers (domain notes):
# REGISTER 423 (interval too brief, UEs re-register every 15 s), REGISTER or INVITE 420 (bad
# extension), INVITE 488 beyond its usual share, and locally generated 478.
MISCONFIGURATION_CODES = ("register_423", "register_420", "invite_420", "invite_488", "local_478")


def random_profile(name: str, rng: np.random.Generator) -> NetworkProfile:
    """A network drawn at random: size, mix, time zone, timers, vendor code choices, fault intensity.

    Training on many of these, not on a few fixed profiles, is what lets a model serve a
    network it has never seen.
    """
    shares = rng.dirichlet((1.0, 1.0, 1.0))
    codes = rng.choice(MISCONFIGURATION_CODES, size=int(rng.integers(1, len(MISCONFIGURATION_CODES) + 1)),
                       replace=False)  # fmt: skip
    return NetworkProfile(
        name=name,
        subscribers=int(np.exp(rng.uniform(np.log(8_000), np.log(350_000)))),
        busy_hour_call_attempts=float(rng.uniform(0.3, 1.3)),
        utc_offset_h=int(rng.integers(-11, 13)),
        rereg_challenge_fraction=float(rng.uniform(0.0, 0.7)),
        busy_hour_messages=float(rng.uniform(0.005, 0.2)),
        register_failure_codes=(float(shares[0]), float(shares[1])),
        misconfiguration_codes=tuple(str(c) for c in codes),
        latency_scale=float(np.exp(rng.uniform(np.log(0.6), np.log(1.8)))),
        diameter_timeout_s=float(rng.uniform(3.0, 8.0)),
        fault_intensity_min=float(rng.uniform(0.3, 0.8)),
        storm_overload_control=float(rng.uniform(0.0, 1.0)),
    )


def diurnal_load(minute_of_day: np.ndarray) -> np.ndarray:
    """Relative offered load in [~0.06, 1]: a night trough and two busy periods."""
    hours = minute_of_day / 60.0
    morning = np.exp(-0.5 * ((hours - 11.0) / 2.5) ** 2)
    evening = 0.9 * np.exp(-0.5 * ((hours - 19.0) / 2.0) ** 2)
    return 0.06 + 0.94 * np.clip(np.maximum(morning, evening) + 0.25 * morning * evening, 0, 1)


def overdispersed_counts(rng: np.random.Generator, mean: np.ndarray, shape_k: float = 20.0) -> np.ndarray:
    """Gamma-Poisson (negative binomial) counts: Poisson arrivals with a fluctuating rate."""
    rate = rng.gamma(shape_k, np.maximum(mean, 1e-9) / shape_k)
    return rng.poisson(rate).astype(np.float64)


ONSET_SHAPES = ("step", "ramp", "busy_hour", "spike", "step_heal")
# Share of a fault's full intensity from which a minute of a node timeline is labelled with it.
VISIBLE_ACTIVITY = 0.1


def _onset_activity(
    kind: str, steps: int, onset: int, rng: np.random.Generator, load: np.ndarray
) -> np.ndarray:
    """Fault intensity per minute, 0 before onset.

    step: on at once; ramp: rises over 5-15 minutes; busy_hour: present only while the
    offered load is high (gone at night); spike: on at once, decaying over 8-20 minutes;
    step_heal: on at once, then partly healing (failover) to a third within 10-20 minutes.
    """
    t = np.arange(steps) - onset
    active = t >= 0
    if kind == "step":
        return active.astype(np.float64)
    if kind == "ramp":
        return np.clip((t + 1) / rng.uniform(5, 15), 0, 1) * active
    if kind == "busy_hour":
        return np.clip((load - 0.55) / 0.25, 0, 1) * active
    if kind == "spike":
        return np.exp(-np.maximum(t, 0) / rng.uniform(8, 20)) * active
    if kind == "step_heal":
        return (0.3 + 0.7 * np.exp(-np.maximum(t, 0) / rng.uniform(10, 20))) * active
    raise ValueError(f"unknown onset kind {kind!r}; known: {', '.join(ONSET_SHAPES)}")


@dataclass
class MinuteParams:
    """Per-minute parameters of the traffic, which faults modify before counting."""

    reg_initial: np.ndarray
    reg_refresh: np.ndarray
    reg_dereg: np.ndarray
    calls: np.ndarray
    messages: np.ndarray
    subscribers: float
    rereg_challenge: float
    # Fractions of initial REGISTERs challenged (401) and failing (5xx/480).
    p_challenge: np.ndarray
    p_reg_fail: np.ndarray
    reg_retry: np.ndarray
    # Latency means in ms, by operation.
    lat: dict[str, np.ndarray]
    lat_jitter: np.ndarray
    # Share of transactions that lose a message and wait one retransmission (T1 = 500 ms)
    # longer: latency turns bimodal.
    p_delayed: np.ndarray
    p_retransmit: np.ndarray
    p_call_netfail: np.ndarray
    p_call_torn_down: np.ndarray
    p_aar_fail: np.ndarray
    p_aar_timeout: np.ndarray
    p_reg_403: np.ndarray
    # REGISTERs answered 408 (transaction timeout), 423 (interval too brief) and 503.
    p_reg_timeout: np.ndarray
    p_reg_423: np.ndarray
    p_reg_420: np.ndarray
    p_invite_420: np.ndarray
    p_invite_488: np.ndarray
    p_reg_503: np.ndarray
    # Share of 503 answers that carry Retry-After (local overload control).
    retry_after_share: np.ndarray
    local_478: np.ndarray
    contacts_factor: np.ndarray
    # Throughput ceiling as a fraction of offered messages (1 = no ceiling).
    throughput: np.ndarray
    profile: NetworkProfile


def _normal_params(profile: NetworkProfile, load: np.ndarray, rng: np.random.Generator) -> MinuteParams:
    steps = load.shape[0]
    subs = float(profile.subscribers)
    ones = np.ones(steps)
    lat_base = {
        "register_to_401": 120.0, "auth_register_to_200": 180.0, "reregister_to_200": 150.0,
        "register_to_failure": 250.0, "invite_to_18x": 2800.0, "invite_to_200": 9000.0,
        "bye_to_200": 90.0, "subscribe_to_200": 110.0, "message_to_200": 140.0, "aar": 40.0,
    }  # fmt: skip
    scale = profile.latency_scale * rng.uniform(0.85, 1.15)
    return MinuteParams(
        reg_initial=subs / 2500.0 * (0.4 + load),
        reg_refresh=subs / 50.0 * (0.85 + 0.15 * load),
        reg_dereg=subs / 3000.0 * (0.4 + load),
        calls=subs * profile.busy_hour_call_attempts / 60.0 * load,
        messages=subs * profile.busy_hour_messages / 60.0 * load,
        subscribers=subs,
        rereg_challenge=profile.rereg_challenge_fraction,
        p_challenge=ones.copy(),
        p_reg_fail=0.002 * ones,
        reg_retry=ones.copy(),
        lat={k: v * scale * (1 + 0.15 * load) * ones for k, v in lat_base.items()},
        lat_jitter=0.35 * ones,
        p_delayed=0.0 * ones,
        p_retransmit=0.002 * ones,
        p_call_netfail=0.005 * ones,
        p_call_torn_down=0.002 * ones,
        p_aar_fail=0.001 * ones,
        p_aar_timeout=0.0002 * ones,
        p_reg_403=0.001 * ones,
        p_reg_timeout=0.0 * ones,
        p_reg_423=0.0 * ones,
        p_reg_420=0.0 * ones,
        p_invite_420=0.0 * ones,
        p_invite_488=0.003 * ones,
        p_reg_503=0.0002 * ones,
        retry_after_share=0.1 * ones,
        local_478=0.02 * load * subs / 10_000,
        contacts_factor=ones.copy(),
        throughput=ones.copy(),
        profile=profile,
    )


def _hss_unreachable(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """Cx down: 401 challenges vanish, REGISTERs fail 480/500/504 at the Diameter timeout."""
    p.p_challenge *= 1 - a
    p.p_reg_fail = np.maximum(p.p_reg_fail, 0.97 * a)
    p.reg_retry *= 1 + 2.0 * a
    timeout_ms = 1000.0 * p.profile.diameter_timeout_s
    p.lat["register_to_failure"] = p.lat["register_to_failure"] * (1 - a) + timeout_ms * a
    p.contacts_factor *= np.clip(1 - _run_length(a > 0.5) / 60.0, 0.05, 1)


def _run_length(mask: np.ndarray) -> np.ndarray:
    """Minutes since each run of True began (0 where False)."""
    counts = np.cumsum(mask)
    return counts - np.maximum.accumulate(np.where(mask, 0, counts))


def _hss_slow(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """Cx slow: REGISTER latency mean and p95 climb several-fold, with few failures."""
    factor = 1 + rng.uniform(3, 6) * a
    for op in ("register_to_401", "auth_register_to_200", "reregister_to_200"):
        p.lat[op] = p.lat[op] * factor
    p.lat_jitter = p.lat_jitter * (1 + a)
    # The few REGISTERs that fail wait for the Diameter timeout.
    p.p_reg_fail = p.p_reg_fail + 0.01 * a
    timeout_ms = 1000.0 * p.profile.diameter_timeout_s
    p.lat["register_to_failure"] = p.lat["register_to_failure"] * (1 - a) + timeout_ms * a


def _link_at_capacity(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """Messages plateau at a ceiling in the busy hour; latency and retransmissions climb."""
    offered = p.reg_refresh + 6 * p.calls
    ceiling = rng.uniform(0.6, 0.8) * offered.max()
    overload = np.maximum(offered / ceiling - 1, 0) * a
    # A link at its limit shows up only when the window carries enough load to reach it.
    overload = np.maximum(overload, 0.15 * a)
    p.throughput = 1 / (1 + overload)
    for op in p.lat:
        p.lat[op] = p.lat[op] * (1 + 3 * overload + 10 * overload**2)
    p.lat_jitter = p.lat_jitter * (1 + 2 * overload)
    p.p_retransmit = p.p_retransmit + 0.08 * overload
    p.p_call_netfail = p.p_call_netfail + 0.05 * np.minimum(overload, 1)
    p.p_reg_fail = p.p_reg_fail + 0.03 * np.minimum(overload, 1)
    # Transactions that exhaust their retransmissions: 408 at timer F.
    p.p_reg_timeout = p.p_reg_timeout + 0.02 * np.minimum(overload, 1)
    p.p_delayed = p.p_delayed + 0.1 * np.minimum(overload, 1)


def _rx_pcrf_down(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """Rx down: AARs time out, REGISTER gets 403, calls are answered then torn down at once."""
    p.p_aar_timeout = np.maximum(p.p_aar_timeout, 0.9 * a)
    p.p_aar_fail = np.maximum(p.p_aar_fail, 0.08 * a)
    p.p_reg_403 = np.maximum(p.p_reg_403, 0.6 * a)
    p.p_call_torn_down = np.maximum(p.p_call_torn_down, 0.95 * a)
    p.lat["aar"] = p.lat["aar"] * (1 - a) + 3000.0 * a


def _dns_failure(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """DNS down: locally generated 478 with millisecond latency, spreading over record TTLs."""
    p.local_478 = p.local_478 + a * (0.6 * p.calls + 0.2 * p.reg_initial)
    p.p_call_netfail = p.p_call_netfail * (1 - a) + 0.6 * a
    p.lat["invite_to_18x"] = p.lat["invite_to_18x"] * (1 - 0.5 * a)


def _pcscf_overload(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """Local overload control: 503 with Retry-After, retries amplify load, goodput collapses."""
    period = rng.uniform(6, 12)
    wave = a * (0.6 + 0.4 * np.sin(2 * np.pi * np.arange(a.shape[0]) / period))
    p.p_reg_503 = np.maximum(p.p_reg_503, 0.4 * wave)
    p.p_call_netfail = p.p_call_netfail + 0.4 * wave
    p.retry_after_share = p.retry_after_share * (1 - a) + 0.95 * a
    p.reg_retry = p.reg_retry * (1 + 1.5 * wave)
    p.throughput = p.throughput * (1 - 0.3 * wave)
    for op in p.lat:
        p.lat[op] = p.lat[op] * (1 + wave)


def _scscf_partial_down(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """One S-CSCF of N down: about 1/N of requests time out (408, then 504) until failover."""
    share = a / rng.integers(2, 5)
    p.p_reg_timeout = p.p_reg_timeout + share
    p.p_call_netfail = p.p_call_netfail + share
    # Timer F: 64 x T1 (500 ms) before the transaction gives up.
    p.lat["register_to_failure"] = p.lat["register_to_failure"] * (1 - a) + 32_000.0 * a


def _registration_storm(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """After a restart: initial REGISTERs and 401s at 10-100 x baseline; contacts rebuild from ~0."""
    p.reg_initial = p.reg_initial * (1 + rng.uniform(10, 100) * a)
    p.contacts_factor = p.contacts_factor * (1 - 0.95 * a)
    p.lat["register_to_401"] = p.lat["register_to_401"] * (1 + 2 * a)
    if rng.random() < p.profile.storm_overload_control:
        p.p_reg_503 = np.maximum(p.p_reg_503, rng.uniform(0.1, 0.5) * a)
        p.retry_after_share = p.retry_after_share * (1 - a) + 0.95 * a


def _packet_loss(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """Loss on the access link: retransmissions in proportion to loss; latency gains a T1 mode."""
    loss = rng.uniform(0.02, 0.1)
    p.p_retransmit = p.p_retransmit + 3 * loss * a
    # A transaction of three or so messages loses one with probability about 3 x loss.
    p.p_delayed = p.p_delayed + 3 * loss * a


def _misconfiguration(p: MinuteParams, a: np.ndarray, rng: np.random.Generator) -> None:
    """After an upgrade a code a healthy node never answers appears (one of the profile's
    misconfiguration_codes): REGISTER 423 with UEs re-registering every 15 s, REGISTER or
    INVITE 420, INVITE 488, or a locally generated 478."""
    code = str(rng.choice(p.profile.misconfiguration_codes))
    share = rng.uniform(0.1, 0.6) * a
    if code == "register_423":
        p.p_reg_423 = np.maximum(p.p_reg_423, share)
        p.reg_refresh = p.reg_refresh * (1 + 3 * a)
    elif code == "register_420":
        p.p_reg_420 = np.maximum(p.p_reg_420, share)
        p.reg_retry = p.reg_retry * (1 + a)
    elif code == "invite_420":
        p.p_invite_420 = np.maximum(p.p_invite_420, share)
    elif code == "invite_488":
        p.p_invite_488 = np.maximum(p.p_invite_488, share)
    elif code == "local_478":
        p.local_478 = p.local_478 + share * p.calls
    else:
        raise ValueError(
            f"unknown misconfiguration code {code!r}; known: {', '.join(MISCONFIGURATION_CODES)}"
        )


Modifier = Callable[[MinuteParams, np.ndarray, np.random.Generator], None]

# label -> (onset shape, modifier); docs/simulator.md lists the counters each one moves.
FAULTS: dict[str, tuple[str, Modifier]] = {
    "hss_unreachable": ("step", _hss_unreachable),
    "hss_slow": ("ramp", _hss_slow),
    "link_at_capacity": ("busy_hour", _link_at_capacity),
    "pcscf_overload": ("ramp", _pcscf_overload),
    "rx_pcrf_down": ("step", _rx_pcrf_down),
    "dns_failure": ("ramp", _dns_failure),
    "scscf_partial_down": ("step_heal", _scscf_partial_down),
    "registration_storm": ("spike", _registration_storm),
    "packet_loss": ("step", _packet_loss),
    "misconfiguration": ("step", _misconfiguration),
}
# The first four faults of the catalogue: the quick presets (tests, demo) train on these.
CORE_CONDITIONS: tuple[str, ...] = (NORMAL, "hss_unreachable", "link_at_capacity", "rx_pcrf_down",
                                    "dns_failure")  # fmt: skip
CONDITIONS: tuple[str, ...] = (NORMAL, *FAULTS)


# SIP timer T1 in the core: what a lost message adds to its transaction.
T1_MS = 500.0


def _latency_stats(
    out: np.ndarray, op: str, mean: np.ndarray, jitter: np.ndarray, delayed: np.ndarray,
    rng: np.random.Generator,
) -> None:  # fmt: skip
    """Mean, standard deviation and p95 of a minute's transactions; a delayed share waits T1 more."""
    observed = mean * rng.lognormal(0, 0.05, mean.shape)
    std = observed * jitter * rng.uniform(0.9, 1.1, mean.shape)
    share = np.clip(delayed, 0, 1)
    p95 = np.where(share > 0.05, observed + T1_MS + 1.645 * std, observed + 1.645 * std)
    out[:, FEATURE_INDEX[f"lat_{op}_mean_ms"]] = observed + share * T1_MS
    out[:, FEATURE_INDEX[f"lat_{op}_std_ms"]] = np.sqrt(std**2 + share * (1 - share) * T1_MS**2)
    out[:, FEATURE_INDEX[f"lat_{op}_p95_ms"]] = p95


def _split(
    rng: np.random.Generator, total: np.ndarray, probs: Sequence[np.ndarray | float]
) -> list[np.ndarray]:
    """Binomial thinning of counts into outcomes with the given probabilities (in order)."""
    parts = []
    remaining = total.astype(np.int64)
    left = np.ones_like(total, dtype=np.float64)
    for prob in probs:
        share = np.clip(np.asarray(prob, dtype=np.float64) / np.maximum(left, 1e-12), 0, 1)
        part = rng.binomial(remaining, share)
        parts.append(part.astype(np.float64))
        remaining = remaining - part
        left = left - prob
    parts.append(remaining.astype(np.float64))
    return parts


def _count(p: MinuteParams, rng: np.random.Generator) -> np.ndarray:
    """Turns per-minute parameters into the probe's statistics, in catalogue order."""
    steps = p.calls.shape[0]
    out = np.zeros((steps, NUM_FEATURES), dtype=np.float64)

    def put(name: str, values: np.ndarray | float) -> None:
        out[:, FEATURE_INDEX[name]] = values

    thr = p.throughput
    reg_initial = overdispersed_counts(rng, p.reg_initial * p.reg_retry * thr)
    reg_refresh = overdispersed_counts(rng, p.reg_refresh * thr, 80.0)
    reg_dereg = overdispersed_counts(rng, p.reg_dereg * thr)
    calls = overdispersed_counts(rng, p.calls * thr)
    messages = overdispersed_counts(rng, p.messages * thr)

    # Registration: an initial REGISTER is challenged (401), then re-sent with credentials.
    reg_fail, reg_403, reg_ok = _split(rng, reg_initial, [p.p_reg_fail, p.p_reg_403 * (1 - p.p_reg_fail)])
    challenged = rng.binomial(reg_ok.astype(np.int64), p.p_challenge).astype(np.float64)
    rereg_challenged = rng.binomial(reg_refresh.astype(np.int64), p.rereg_challenge * p.p_challenge)
    refresh_fail = rng.binomial(reg_refresh.astype(np.int64), np.clip(p.p_reg_fail, 0, 1)).astype(np.float64)
    put("req_register_initial", reg_initial + challenged)
    put("req_register_reregister", reg_refresh + rereg_challenged)
    put("req_register_deregister", reg_dereg)
    put("req_register_emergency", rng.poisson(0.002 * p.subscribers / 1000 * np.ones(steps)))
    reg_408 = rng.poisson((p.p_retransmit + p.p_reg_timeout) * reg_initial).astype(np.float64)
    reg_423 = rng.binomial(reg_refresh.astype(np.int64), np.clip(p.p_reg_423, 0, 1)).astype(np.float64)
    reg_420 = rng.binomial(reg_refresh.astype(np.int64), np.clip(p.p_reg_420, 0, 1)).astype(np.float64)
    fail_480, fail_500, fail_504 = _split(
        rng, reg_fail + refresh_fail, list(p.profile.register_failure_codes)
    )
    code_401 = challenged + rereg_challenged
    reg_2xx = reg_ok + np.maximum(reg_refresh - refresh_fail - reg_423 - reg_420, 0) + reg_dereg
    put("code_register_401", code_401)
    put("code_register_403", reg_403)
    put("code_register_404", rng.poisson(0.0005 * reg_initial))
    put("code_register_408", reg_408)
    put("code_register_420", reg_420)
    put("code_register_423", reg_423)
    put("code_register_480", fail_480)
    put("code_register_500", fail_500)
    put("code_register_503", rng.poisson(p.p_reg_503 * reg_initial))
    put("code_register_504", fail_504)
    put("resp_register_2xx", reg_2xx)
    put("resp_register_3xx", 0.0)
    put("resp_register_4xx", code_401 + reg_403 + fail_480 + reg_408 + reg_423 + reg_420
        + out[:, FEATURE_INDEX["code_register_404"]])  # fmt: skip
    put("resp_register_5xx", fail_500 + fail_504 + out[:, FEATURE_INDEX["code_register_503"]])
    put("resp_register_6xx", 0.0)
    put("register_auth_resyncs", rng.poisson(0.002 * challenged))

    # Sessions: outcome shares per the domain notes; network failures split 408/500/503/504.
    p_torn = p.p_call_torn_down
    netfail = np.clip(p.p_call_netfail, 0, 0.9)
    user = (1 - netfail) * np.stack(
        [
            0.07 + 0 * netfail,
            0.06 + 0 * netfail,
            0.07 + 0 * netfail,
            0.03 + 0 * netfail,
            np.clip(p.p_invite_488 + p.p_invite_420, 0, 0.5),
        ]
    )
    mo, mt = _split(rng, calls, [0.5])
    busy, noanswer, cancelled, declined, notacc, failed, answered = _split(
        rng, calls, [user[0], user[1], user[2], user[3], user[4], netfail]
    )
    f408, f500, f503, f504 = _split(rng, failed, [0.2, 0.1, 0.4])
    local_478 = rng.poisson(np.maximum(p.local_478, 0)).astype(np.float64)
    f503 = np.maximum(f503 - local_478, 0)
    torn_down = rng.binomial(answered.astype(np.int64), np.clip(p_torn, 0, 1)).astype(np.float64)
    put("req_invite_initial_mo", mo)
    put("req_invite_initial_mt", mt)
    put("req_invite_reinvite", rng.poisson(0.3 * answered))
    put("req_invite_emergency", rng.poisson(0.0005 * calls))
    put("req_ack", answered + busy + noanswer + cancelled + declined + notacc + failed)
    put("req_bye", rng.poisson(answered * (1 - p_torn)) + torn_down)
    put("req_cancel", cancelled)
    put("req_prack", rng.binomial(calls.astype(np.int64), 0.9))
    put("req_update", rng.binomial(calls.astype(np.int64), 0.2))
    sub = overdispersed_counts(rng, 0.6 * p.reg_initial * thr + 0.2 * p.reg_refresh * thr)
    put("req_subscribe", sub)
    put("req_notify", rng.poisson(1.2 * sub))
    put("req_message", messages)
    put("req_options", rng.poisson(20 * thr))
    ringing = answered + noanswer + cancelled + declined
    put("resp_invite_100", calls)
    put("resp_invite_18x", ringing + busy * 0.1)
    put("code_invite_180", ringing * 0.8)
    put("code_invite_183", ringing * 0.2 + rng.poisson(0.3 * calls * (1 - netfail)))
    put("resp_invite_2xx", answered)
    put("resp_invite_3xx", 0.0)
    put("code_invite_408", f408)
    invite_420 = rng.binomial(
        notacc.astype(np.int64),
        np.clip(p.p_invite_420 / np.maximum(p.p_invite_420 + p.p_invite_488, 1e-12), 0, 1),
    ).astype(np.float64)
    put("code_invite_420", invite_420)
    put("code_invite_480", noanswer)
    put("code_invite_486", busy)
    put("code_invite_487", cancelled)
    put("code_invite_488", notacc - invite_420)
    put("code_invite_500", f500)
    put("code_invite_503", f503)
    put("code_invite_504", f504)
    put("code_invite_603", declined)
    put("code_local_478", local_478)
    put("resp_invite_4xx", f408 + noanswer + busy + cancelled + notacc + local_478)
    put("resp_invite_5xx", f500 + f503 + f504)
    put("resp_invite_6xx", declined)
    bye = out[:, FEATURE_INDEX["req_bye"]]
    put("resp_bye_2xx", bye * 0.995)
    put("resp_bye_4xx", bye * 0.004)
    put("resp_bye_5xx", bye * 0.001)
    put("resp_cancel_2xx", cancelled)
    put("resp_prack_2xx", out[:, FEATURE_INDEX["req_prack"]])
    put("resp_update_2xx", out[:, FEATURE_INDEX["req_update"]] * 0.98)
    put("resp_update_4xx", out[:, FEATURE_INDEX["req_update"]] * 0.02)
    put("resp_subscribe_2xx", sub * (1 - 0.9 * (1 - p.p_challenge)))
    put("resp_subscribe_4xx", sub * 0.01)
    put("resp_subscribe_5xx", sub * 0.9 * (1 - p.p_challenge))
    put("resp_notify_2xx", out[:, FEATURE_INDEX["req_notify"]] * 0.99)
    put("resp_notify_4xx", out[:, FEATURE_INDEX["req_notify"]] * 0.01)
    put("resp_message_2xx", messages * 0.97)
    put("resp_message_4xx", messages * 0.025)
    put("resp_message_5xx", messages * 0.005)
    put("resp_options_2xx", out[:, FEATURE_INDEX["req_options"]])
    put("resp_options_4xx", 0.0)

    for op in p.lat:
        if op != "aar":
            _latency_stats(out, op, p.lat[op], p.lat_jitter, p.p_delayed, rng)
    # A challenge-free failure is answered at the local timer, not after a Diameter round trip.
    no_fail = (reg_fail + refresh_fail) == 0
    for stat in ("mean_ms", "std_ms", "p95_ms"):
        out[no_fail, FEATURE_INDEX[f"lat_register_to_failure_{stat}"]] = 0.0
    no_401 = code_401 == 0
    for stat in ("mean_ms", "std_ms", "p95_ms"):
        out[no_401, FEATURE_INDEX[f"lat_register_to_401_{stat}"]] = 0.0

    total_msgs = out[:, [FEATURE_INDEX[n] for n in FEATURE_NAMES if n.startswith("req_")]].sum(axis=1)
    retrans = rng.poisson(p.p_retransmit * total_msgs).astype(np.float64)
    put("retransmitted_requests", retrans)
    put("retransmitted_responses", rng.poisson(0.5 * retrans))
    put("timer_b_expiries", f408 + rng.poisson(0.02 * retrans))
    put("timer_f_expiries", out[:, FEATURE_INDEX["code_register_408"]])
    reg_503 = out[:, FEATURE_INDEX["code_register_503"]]
    put("responses_503_retry_after", rng.binomial((f503 + reg_503).astype(np.int64), p.retry_after_share))
    put("tcp_connection_failures", rng.poisson(0.01 * retrans + 0.1))
    put("invite_from_unregistered", rng.poisson(0.001 * calls + 2 * (1 - p.contacts_factor) * 0.01 * calls))

    aar = rng.poisson(2 * calls + reg_ok).astype(np.float64)
    aar_timeout, aar_fail, aar_ok = _split(rng, aar, [p.p_aar_timeout, p.p_aar_fail])
    put("rx_aar_attempts", aar)
    put("rx_aar_successes", aar_ok)
    put("rx_aar_failures", aar_fail)
    put("rx_aar_timeouts", aar_timeout)
    put("rx_str_attempts", rng.poisson(0.98 * bye + 0.5 * reg_dereg))
    put("rx_asr_received", rng.poisson(0.001 * aar + torn_down * 0.5))
    aar_lat = p.lat["aar"] * rng.lognormal(0, 0.05, steps)
    put("rx_aar_latency_mean_ms", aar_lat)
    put("rx_aar_latency_std_ms", aar_lat * p.lat_jitter)
    put("rx_aar_latency_p95_ms", aar_lat * (1 + 1.645 * p.lat_jitter))

    contacts = 0.9 * p.subscribers * p.contacts_factor * rng.normal(1, 0.002, steps)
    dialogs = answered * (1 - p_torn) * 100 / 60 * rng.normal(1, 0.03, steps)
    put("gauge_registered_contacts", contacts)
    put("gauge_active_dialogs", np.maximum(dialogs, 0))
    put("gauge_ipsec_security_associations", 2 * contacts)
    put("gauge_rx_sessions_active", contacts * 0.98 + np.maximum(dialogs, 0) * 2)
    put("gauge_pending_transactions", total_msgs / 60 * (p.lat["auth_register_to_200"] / 1000) + retrans)

    responses = out[:, [FEATURE_INDEX[n] for n in FEATURE_NAMES if n.startswith("resp_")]].sum(axis=1)
    put("sip_messages_in", total_msgs + retrans * 0.5)
    put("sip_messages_out", responses + total_msgs * 0.9)
    put("sip_kbytes_in", (total_msgs + retrans) * 0.9 * rng.normal(1, 0.02, steps))
    put("sip_kbytes_out", responses * 0.6 * rng.normal(1, 0.02, steps))

    # REGISTERs less the challenged ones (a 401 and the authenticated re-send are one attempt),
    # so the rate is a share in [0, 1].
    reg_attempts = reg_initial + reg_refresh + reg_dereg
    put("kpi_registration_success_rate", reg_2xx / np.maximum(reg_attempts, 1))
    user_caused = busy + noanswer + cancelled + declined
    put("kpi_session_establishment_success_rate", answered / np.maximum(calls - user_caused, 1))
    put("kpi_ineffective_session_attempts_ratio", (f408 + f500 + f503 + f504) / np.maximum(calls, 1))
    put("kpi_answer_seizure_ratio", answered / np.maximum(calls, 1))
    put("kpi_network_effectiveness_ratio", (answered + user_caused) / np.maximum(calls, 1))
    duration = np.where(answered > 0, 100 * (1 - torn_down / np.maximum(answered, 1)) + 1, 0)
    put("kpi_mean_call_duration_s", duration * rng.normal(1, 0.05, steps))
    # A share of the calls that ended (BYE) in the minute, as the data contract defines it.
    put("kpi_calls_torn_down_within_2s", torn_down / np.maximum(bye, 1))
    return np.maximum(out, 0)


@dataclass(frozen=True)
class Episode:
    """One fault on a node's timeline: from onset (minute index) for duration minutes."""

    condition: str
    onset: int
    duration: int


def simulate_timeline(
    profile: NetworkProfile, start_minute_utc: int, minutes: int, episodes: Sequence[Episode],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A node's statistics over consecutive minutes, and each minute's label.

    A minute is labelled with the episode's fault while the fault shows, at VISIBLE_ACTIVITY
    of its full intensity or more: a busy-hour fault only while the load brings it out,
    a spike until it has decayed, as an operator would mark the incident; otherwise
    "normal". (The faint tail of a decaying fault is left unlabelled rather than taught
    as the fault: it looks like normal traffic.)
    """
    local = (start_minute_utc + profile.utc_offset_h * 60 + np.arange(minutes)) % 1440
    load = diurnal_load(local.astype(np.float64))
    params = _normal_params(profile, load, rng)
    labels = np.full(minutes, NORMAL, dtype=object)
    for episode in episodes:
        if episode.condition not in FAULTS:
            raise ValueError(f"unknown condition {episode.condition!r}; known: {', '.join(CONDITIONS)}")
        shape, modify = FAULTS[episode.condition]
        activity = _onset_activity(shape, minutes, episode.onset, rng, load)
        activity[episode.onset + episode.duration :] = 0.0
        intensity = 1.0
        if profile.fault_intensity_min < 1.0:
            intensity = float(rng.uniform(profile.fault_intensity_min, 1.0))
        modify(params, activity * intensity, rng)
        labels[activity >= VISIBLE_ACTIVITY] = episode.condition
    return _count(params, rng), labels.astype(str)


def simulate_window(
    profile: NetworkProfile,
    start_minute_utc: int,
    condition: str,
    rng: np.random.Generator,
    steps: int = WINDOW_STEPS,
    onset_minute: int | None = None,
) -> np.ndarray:
    """One window (steps, NUM_FEATURES) of float32 statistics under the given condition."""
    episodes = []
    if condition != NORMAL:
        if onset_minute is None:
            onset_minute = int(rng.integers(0, max(steps - MIN_FAULT_MINUTES, 0) + 1))
        episodes.append(Episode(condition, onset_minute, steps))
    values, _ = simulate_timeline(profile, start_minute_utc, steps, episodes, rng)
    return values.astype(np.float32)


def window_start_minute(profile: NetworkProfile, condition: str, rng: np.random.Generator) -> int:
    """A random UTC start; a busy-hour fault's window is placed where its fault shows."""
    if condition in FAULTS and FAULTS[condition][0] == "busy_hour":
        local_start = int(
            rng.choice([int(rng.integers(9 * 60, 12 * 60)), int(rng.integers(17 * 60, 19 * 60))])
        )
        return (local_start - profile.utc_offset_h * 60) % 1440
    return int(rng.integers(0, 1440))


def random_window(
    profile: NetworkProfile, condition: str, rng: np.random.Generator, steps: int = WINDOW_STEPS
) -> np.ndarray:
    """A window of the condition at a random time of day where the condition can show."""
    return simulate_window(profile, window_start_minute(profile, condition, rng), condition, rng, steps)


def simulate_windows(
    profile: NetworkProfile,
    conditions: Sequence[str],
    per_condition: int,
    seed: int,
    steps: int = WINDOW_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """per_condition windows of each condition at random times of day; (windows, labels)."""
    rng = np.random.default_rng(seed)
    windows, labels = [], []
    for condition in conditions:
        for _ in range(per_condition):
            windows.append(random_window(profile, condition, rng, steps))
            labels.append(condition)
    return np.stack(windows), np.array(labels)


@dataclass(frozen=True)
class ProbeDamage:
    """What real probe exports do to per-minute rows; all rates are per minute (or per value)."""

    # Minutes the probe never exported (the row is absent).
    missing_minute_rate: float = 0.01
    # Values lost in export (NaN).
    missing_value_rate: float = 0.0005
    # Relative noise of every statistic (collection jitter, rounding).
    counter_noise: float = 0.01
    # Minutes whose counters reset (a probe restart): the exported delta goes negative.
    counter_reset_rate: float = 0.001
    # Minutes that start a probe outage (a run of absent rows, its length drawn log-uniformly
    # within outage_minutes); 0: none.
    outage_rate: float = 0.0
    outage_minutes: tuple[int, int] = (6, 90)


COUNTER_COLUMNS = np.array([n.startswith(("req_", "resp_", "code_")) for n in FEATURE_NAMES])


def damage_rows(
    values: np.ndarray, damage: ProbeDamage, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Applies probe damage to a node's (minutes, features) rows; returns (values, kept-minute mask)."""
    noisy = values * (1 + damage.counter_noise * rng.standard_normal(values.shape))
    # Noise keeps each value in its column's valid range: a ratio near 1 stays a ratio.
    noisy = np.clip(noisy, LOWER, UPPER)
    noisy[rng.random(values.shape) < damage.missing_value_rate] = np.nan
    resets = np.flatnonzero(rng.random(values.shape[0]) < damage.counter_reset_rate)
    counters = np.flatnonzero(COUNTER_COLUMNS)
    # A delta taken across a restart: the new counter minus the old cumulative total.
    noisy[np.ix_(resets, counters)] -= rng.uniform(100, 10_000, (len(resets), len(counters)))
    kept = np.asarray(rng.random(values.shape[0]) >= damage.missing_minute_rate)
    if damage.outage_rate > 0:
        starts = np.flatnonzero(rng.random(values.shape[0]) < damage.outage_rate)
        low, high = damage.outage_minutes
        lengths = np.exp(rng.uniform(np.log(low), np.log(high + 1), len(starts))).astype(int)
        for start, length in zip(starts, lengths, strict=True):
            kept[start : start + length] = False
    return noisy, kept


def plan_episodes(minutes: int, faults_per_day: float, rng: np.random.Generator,
                  conditions: Sequence[str] = tuple(FAULTS)) -> list[Episode]:  # fmt: skip
    """Non-overlapping fault episodes of 30-180 minutes, at least an hour apart."""
    episodes, minute = [], int(rng.integers(0, 120))
    faults = [c for c in conditions if c != NORMAL]
    mean_gap = 1440 / max(faults_per_day, 1e-9)
    while faults and (minute := minute + 60 + int(rng.exponential(mean_gap))) < minutes:
        duration = int(rng.integers(30, 181))
        episodes.append(Episode(str(rng.choice(faults)), minute, duration))
        minute += duration
    return episodes


def simulate_node_rows(
    profile: NetworkProfile, node: str, start_minute_utc: int, minutes: int, seed: int,
    faults_per_day: float = 6.0, damage: ProbeDamage | None = ProbeDamage(),
    conditions: Sequence[str] = CONDITIONS,
) -> dict[str, np.ndarray]:  # fmt: skip
    """One node's labelled per-minute rows in the on-disk row format (see traffic/rows.py)."""
    rng = np.random.default_rng(seed)
    episodes = plan_episodes(minutes, faults_per_day, rng, conditions)
    values, labels = simulate_timeline(profile, start_minute_utc, minutes, episodes, rng)
    kept = np.ones(minutes, dtype=bool)
    if damage is not None:
        values, kept = damage_rows(values, damage, rng)
    return {
        "node": np.full(kept.sum(), node),
        "network": np.full(kept.sum(), profile.name),
        "minute": (start_minute_utc + np.arange(minutes))[kept].astype(np.int64),
        "values": values[kept],
        "label": labels[kept],
    }
