"""The catalogue of per-minute P-CSCF statistics, in column order, grouped by family.

Names follow the families of the domain notes (3GPP TS 32.409 as the open-source IMS
cores implement it): requests by method, responses by method and class, specific
codes, latencies, reliability, Rx (Diameter to the PCRF), gauges and derived KPIs.
A probe exporter that fills these columns in this order can feed the trainer and
the server directly.
"""

from __future__ import annotations

_METHODS = (
    "register_initial", "register_reregister", "register_deregister", "register_emergency",
    "invite_initial_mo", "invite_initial_mt", "invite_reinvite", "invite_emergency",
    "ack", "bye", "cancel", "prack", "update", "subscribe", "notify", "message", "options",
)  # fmt: skip
_RESPONSE_CLASSES = {
    "register": ("2xx", "3xx", "4xx", "5xx", "6xx"),
    "invite": ("100", "18x", "2xx", "3xx", "4xx", "5xx", "6xx"),
    "bye": ("2xx", "4xx", "5xx"),
    "cancel": ("2xx",),
    "prack": ("2xx",),
    "update": ("2xx", "4xx"),
    "subscribe": ("2xx", "4xx", "5xx"),
    "notify": ("2xx", "4xx"),
    "message": ("2xx", "4xx", "5xx"),
    "options": ("2xx", "4xx"),
}
_SPECIFIC_CODES = {
    "register": ("401", "403", "404", "408", "420", "423", "480", "500", "503", "504"),
    "invite": ("180", "183", "408", "420", "480", "486", "487", "488", "500", "503", "504", "603"),
    "local": ("478",),
}
# Operations whose latency the probe measures (mean, standard deviation, p95; in ms).
LATENCY_OPERATIONS = (
    "register_to_401", "auth_register_to_200", "reregister_to_200", "register_to_failure",
    "invite_to_18x", "invite_to_200", "bye_to_200", "subscribe_to_200", "message_to_200",
)  # fmt: skip
_LATENCY_STATS = ("mean_ms", "std_ms", "p95_ms")
_RELIABILITY = (
    "retransmitted_requests", "retransmitted_responses", "timer_b_expiries",
    "timer_f_expiries", "responses_503_retry_after", "tcp_connection_failures",
    "register_auth_resyncs", "invite_from_unregistered",
)  # fmt: skip
_RX = (
    "aar_attempts", "aar_successes", "aar_failures", "aar_timeouts", "str_attempts",
    "asr_received", "aar_latency_mean_ms", "aar_latency_std_ms", "aar_latency_p95_ms",
)  # fmt: skip
_GAUGES = (
    "registered_contacts", "active_dialogs", "ipsec_security_associations",
    "rx_sessions_active", "pending_transactions",
)  # fmt: skip
_TRAFFIC = ("sip_messages_in", "sip_messages_out", "sip_kbytes_in", "sip_kbytes_out")
_KPIS = (
    "registration_success_rate", "session_establishment_success_rate",
    "ineffective_session_attempts_ratio", "answer_seizure_ratio",
    "network_effectiveness_ratio", "mean_call_duration_s", "calls_torn_down_within_2s",
)  # fmt: skip

FAMILIES: dict[str, tuple[str, ...]] = {
    "requests": tuple(f"req_{m}" for m in _METHODS),
    "responses": tuple(f"resp_{m}_{c}" for m, cs in _RESPONSE_CLASSES.items() for c in cs),
    "codes": tuple(f"code_{m}_{c}" for m, cs in _SPECIFIC_CODES.items() for c in cs),
    "latencies": tuple(f"lat_{op}_{s}" for op in LATENCY_OPERATIONS for s in _LATENCY_STATS),
    "reliability": _RELIABILITY,
    "rx": tuple(f"rx_{n}" for n in _RX),
    "gauges": tuple(f"gauge_{n}" for n in _GAUGES),
    "traffic": _TRAFFIC,
    "kpis": tuple(f"kpi_{n}" for n in _KPIS),
}

FEATURE_NAMES: tuple[str, ...] = tuple(name for names in FAMILIES.values() for name in names)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
NUM_FEATURES = len(FEATURE_NAMES)
WINDOW_STEPS = 60
