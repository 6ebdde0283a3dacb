"""The probe data contract: every statistic's kind, unit, valid range and meaning, declared once.

A probe exporter fills the 129 columns of traffic/catalogue.py; this module says what a
value in each column means, so that an exporter that fills a column differently (a
ratio in percent, a cumulative total instead of a per-minute delta, a share exported as
a count) is caught on ingest instead of being misread by the model. docs/data-contract.md
shows the table generated from it (`make docs`).

Kinds, and where each bound comes from (DOMAIN.md):

- count: events in the minute, the delta of a cumulative probe counter, >= 0. In raw
  rows a probe restart shows as a negative delta (the new counter minus the old total):
  that is a counter reset, not a contract violation; traffic/windowing.py repairs it. In
  a window (after repair) a count is never negative. The upper bound, 10 million per
  minute, is far above what one P-CSCF can carry (its largest nodes serve a few hundred
  thousand subscribers; every one of them registering in the same minute is about a
  million messages): a larger value is a cumulative total, not a delta.
- gauge: a snapshot taken in the minute (registered contacts, dialogs, ...), >= 0, and
  at most 10 million (several security associations per contact of the largest nodes).
- latency: milliseconds, the mean, standard deviation or p95 of the minute's
  transactions; 0 when the minute had none. At most 10 minutes: every measured SIP or
  Diameter transaction ends or times out well within it (INVITE timer C, the longest,
  is a little over 3 minutes in RFC 3261); a value beyond is in other units.
- ratio: a share in [0, 1] (not percent); 0 when the minute had nothing to divide.
- seconds: kpi_mean_call_duration_s, the mean duration of the calls that ended in the
  minute, in [0, 86 400] (a day; operators' session timers end calls long before).

NaN (a value lost in export) is "missing" in rows, not a violation: windowing repairs
it. A window must be complete, so there NaN breaks the contract.

Out-of-contract values in rows are counted by column; windowing treats each one as a
lost value (it interpolates isolated ones), and drops a window that WindowRule finds
unusable. The server applies the same WindowRule to each window it receives: an unusable
one is refused, one with a few out-of-contract values is served and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np

from faultprint.traffic.catalogue import FAMILIES, FEATURE_NAMES, LATENCY_OPERATIONS, NUM_FEATURES


class Kind(StrEnum):
    """What a statistic measures; each kind has its valid range (see the module docstring)."""

    COUNT = "count"
    GAUGE = "gauge"
    LATENCY = "latency"
    RATIO = "ratio"
    SECONDS = "seconds"


# Per-minute events of one P-CSCF, and snapshot sizes: see the module docstring.
_MAX_PER_NODE = 10_000_000.0
# Every measured transaction ends or times out well within 10 minutes.
_MAX_LATENCY_MS = 600_000.0
# A day: no call lasts longer on an operator's network.
_MAX_CALL_SECONDS = 86_400.0

KIND_RANGES: dict[Kind, tuple[float, float]] = {
    Kind.COUNT: (0.0, _MAX_PER_NODE),
    Kind.GAUGE: (0.0, _MAX_PER_NODE),
    Kind.LATENCY: (0.0, _MAX_LATENCY_MS),
    Kind.RATIO: (0.0, 1.0),
    Kind.SECONDS: (0.0, _MAX_CALL_SECONDS),
}


@dataclass(frozen=True)
class Statistic:
    """One column of the probe's per-minute rows."""

    name: str
    family: str
    kind: Kind
    # Unit of a value, such as "requests/min", "ms" or "1" (a ratio).
    unit: str
    # Valid range of a value in a window (after repair), inclusive.
    minimum: float
    maximum: float
    # What the value is, in one line.
    meaning: str

    def range_text(self) -> str:
        """The valid range as error messages show it: "[0, 1] (ratio)", "[0, 600 000] ms (latency)"."""
        unit = "" if self.unit == "1" else f" {self.unit}"
        return f"[{_number(self.minimum)}, {_number(self.maximum)}]{unit} ({self.kind.value})"


def _number(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ") if value == int(value) else f"{value:g}"


_METHOD_NAMES = {
    "register": "REGISTER", "invite": "INVITE", "bye": "BYE", "cancel": "CANCEL", "prack": "PRACK",
    "update": "UPDATE", "subscribe": "SUBSCRIBE", "notify": "NOTIFY", "message": "MESSAGE",
    "options": "OPTIONS", "ack": "ACK",
}  # fmt: skip
_REQUESTS = {
    "register_initial": "initial REGISTERs, the authenticated re-send after a 401 challenge included",
    "register_reregister": "re-REGISTERs (registration refresh), the re-send after a challenge included",
    "register_deregister": "de-REGISTERs (expires 0)",
    "register_emergency": "emergency REGISTERs",
    "invite_initial_mo": "initial INVITEs from the node's own UEs (mobile-originated)",
    "invite_initial_mt": "initial INVITEs towards the node's UEs (mobile-terminated)",
    "invite_reinvite": "re-INVITEs within established dialogs",
    "invite_emergency": "emergency INVITEs",
}
_REASONS = {
    "100": "Trying", "180": "Ringing", "183": "Session Progress",
    "401": "Unauthorized (the IMS-AKA challenge)",
    "403": "Forbidden", "404": "Not Found", "408": "Request Timeout", "420": "Bad Extension",
    "423": "Interval Too Brief", "478": "Unresolvable Destination, generated locally (DNS failure)",
    "480": "Temporarily Unavailable", "486": "Busy Here", "487": "Request Terminated",
    "488": "Not Acceptable Here", "500": "Server Internal Error", "503": "Service Unavailable",
    "504": "Server Time-out", "603": "Decline",
}  # fmt: skip
_OPERATIONS = {
    "register_to_401": "initial REGISTER to its 401 challenge",
    "auth_register_to_200": "authenticated REGISTER to its 200",
    "reregister_to_200": "re-REGISTER to its 200",
    "register_to_failure": "REGISTER to a failure answer (timeouts included)",
    "invite_to_18x": "initial INVITE to its first 18x",
    "invite_to_200": "initial INVITE to its 200 (ringing included)",
    "bye_to_200": "BYE to its 200",
    "subscribe_to_200": "SUBSCRIBE to its 200",
    "message_to_200": "MESSAGE to its 200",
}
_LATENCY_STATS = {"mean_ms": "mean", "std_ms": "standard deviation", "p95_ms": "95th percentile"}
_RELIABILITY = {
    "retransmitted_requests": "requests retransmitted (SIP timers A/E)",
    "retransmitted_responses": "responses retransmitted",
    "timer_b_expiries": "INVITE client transactions that timed out (timer B)",
    "timer_f_expiries": "non-INVITE client transactions that timed out (timer F)",
    "responses_503_retry_after": "503 answers carrying Retry-After (local overload control)",
    "tcp_connection_failures": "TCP connections that failed to open or broke",
    "register_auth_resyncs": "IMS-AKA re-synchronisations (AUTS) in REGISTERs",
    "invite_from_unregistered": "INVITEs from UEs with no registered contact",
}
# Rx (Diameter to the PCRF): messages per minute, and three latencies (an exception to the family).
_RX: dict[str, tuple[Kind, str, str]] = {
    "rx_aar_attempts": (Kind.COUNT, "messages/min", "AA-Requests sent to the PCRF"),
    "rx_aar_successes": (Kind.COUNT, "messages/min", "AA-Answers with success"),
    "rx_aar_failures": (Kind.COUNT, "messages/min", "AA-Answers with a failure result code"),
    "rx_aar_timeouts": (Kind.COUNT, "messages/min", "AA-Requests left unanswered (Diameter Tx timer)"),
    "rx_str_attempts": (Kind.COUNT, "messages/min", "Session-Termination-Requests sent"),
    "rx_asr_received": (Kind.COUNT, "messages/min", "Abort-Session-Requests received from the PCRF"),
    "rx_aar_latency_mean_ms": (Kind.LATENCY, "ms", "mean AAR to AAA time"),
    "rx_aar_latency_std_ms": (Kind.LATENCY, "ms", "standard deviation of the AAR to AAA time"),
    "rx_aar_latency_p95_ms": (Kind.LATENCY, "ms", "95th percentile of the AAR to AAA time"),
}
_GAUGES: dict[str, tuple[str, str]] = {
    "gauge_registered_contacts": ("contacts", "registered contacts"),
    "gauge_active_dialogs": ("dialogs", "established call dialogs"),
    "gauge_ipsec_security_associations": ("associations", "IPsec security associations with UEs"),
    "gauge_rx_sessions_active": ("sessions", "open Rx sessions"),
    "gauge_pending_transactions": ("transactions", "SIP transactions in progress"),
}
# The traffic family: SIP volume; kB are an exception to the family's messages/min.
_TRAFFIC: dict[str, tuple[str, str]] = {
    "sip_messages_in": ("messages/min", "SIP messages received (requests and responses)"),
    "sip_messages_out": ("messages/min", "SIP messages sent"),
    "sip_kbytes_in": ("kB/min", "SIP kilobytes received"),
    "sip_kbytes_out": ("kB/min", "SIP kilobytes sent"),
}
# Derived KPIs are ratios in [0, 1] over the minute, except the mean call duration (seconds).
_KPIS: dict[str, tuple[Kind, str, str]] = {
    "kpi_registration_success_rate": (Kind.RATIO, "1", "REGISTERs answered 2xx, of all REGISTERs "
                                      "less the 401-challenged ones (a challenge is not a failure)"),
    "kpi_session_establishment_success_rate": (Kind.RATIO, "1", "initial INVITEs answered 2xx, of those "
                                               "not ended by the user (486, 480, 487, 603)"),
    "kpi_ineffective_session_attempts_ratio": (Kind.RATIO, "1", "initial INVITEs failed by the network "
                                               "(408, 500, 503, 504), of all initial INVITEs"),
    "kpi_answer_seizure_ratio": (Kind.RATIO, "1", "initial INVITEs answered 2xx, of all initial INVITEs"),
    "kpi_network_effectiveness_ratio": (Kind.RATIO, "1", "initial INVITEs answered or ended by the user, "
                                        "of all initial INVITEs"),
    "kpi_mean_call_duration_s": (Kind.SECONDS, "s", "mean duration of the calls that ended in the minute"),
    "kpi_calls_torn_down_within_2s": (Kind.RATIO, "1", "calls that ended within 2 s of their answer, "
                                      "of the calls that ended in the minute"),
}  # fmt: skip


def _declare(name: str, family: str) -> tuple[Kind, str, str]:
    """(kind, unit, meaning) of a column: from its family, or from the family's exception table."""
    if family in ("requests", "responses", "codes"):
        method, _, rest = name.partition("_")[2].partition("_")
        if family == "requests":
            return (
                Kind.COUNT,
                "requests/min",
                _REQUESTS.get(f"{method}_{rest}", f"{_METHOD_NAMES[method]} requests"),
            )
        if family == "responses":
            if rest in _REASONS:
                return (
                    Kind.COUNT,
                    "responses/min",
                    f"{_METHOD_NAMES[method]} {rest} {_REASONS[rest]} responses",
                )
            return Kind.COUNT, "responses/min", f"{_METHOD_NAMES[method]} responses of class {rest}"
        if method == "local":
            return Kind.COUNT, "responses/min", f"{rest} {_REASONS[rest]}"
        return (
            Kind.COUNT,
            "responses/min",
            f"{_METHOD_NAMES[method]} requests answered {rest} {_REASONS[rest]}",
        )
    if family == "latencies":
        operation = next(op for op in LATENCY_OPERATIONS if name.startswith(f"lat_{op}_"))
        stat = _LATENCY_STATS[name.removeprefix(f"lat_{operation}_")]
        return Kind.LATENCY, "ms", f"{stat} time, {_OPERATIONS[operation]}, over the minute's transactions"
    if family == "reliability":
        return Kind.COUNT, "events/min", _RELIABILITY[name]
    if family == "rx":
        return _RX[name]
    if family == "gauges":
        unit, meaning = _GAUGES[name]
        return Kind.GAUGE, unit, f"{meaning}, a snapshot in the minute"
    if family == "traffic":
        unit, meaning = _TRAFFIC[name]
        return Kind.COUNT, unit, meaning
    if family == "kpis":
        return _KPIS[name]
    raise ValueError(f"family {family!r} of {name} has no declaration in traffic/contract.py")


STATISTICS: tuple[Statistic, ...] = tuple(
    Statistic(name, family, kind, unit, *KIND_RANGES[kind], meaning)
    for family, names in FAMILIES.items()
    for name in names
    for kind, unit, meaning in [_declare(name, family)]
)
assert tuple(s.name for s in STATISTICS) == FEATURE_NAMES, "the contract follows the catalogue's order"

# Per-column bounds of a window (after repair), in catalogue order.
LOWER = np.array([s.minimum for s in STATISTICS])
UPPER = np.array([s.maximum for s in STATISTICS])
# Count columns: a negative delta in a raw row is a counter reset, repaired by windowing.
IS_COUNT = np.array([s.kind is Kind.COUNT for s in STATISTICS])
# Per-column lower bounds of a raw row: counts may go negative (a reset).
ROW_LOWER = np.where(IS_COUNT, -np.inf, LOWER)

Stage = Literal["rows", "windows"]


def out_of_contract(values: np.ndarray, stage: Stage) -> np.ndarray:
    """Boolean mask, shaped as values (..., 129), of the values that break the contract.

    rows: raw per-minute rows; NaN is a missing value and a negative count a counter
    reset, neither of them a violation. windows: repaired windows; every value must be
    finite and within its column's range.
    """
    _check_columns(values)
    if stage == "rows":
        return (values < ROW_LOWER) | (values > UPPER)
    return ~((values >= LOWER) & (values <= UPPER))


def count_out_of_contract(values: np.ndarray, stage: Stage) -> np.ndarray:
    """Out-of-contract values per column of values (..., 129): int64 (129,)."""
    mask = out_of_contract(values, stage)
    return mask.reshape(-1, NUM_FEATURES).sum(axis=0)


def _check_columns(values: np.ndarray) -> None:
    if values.shape[-1] != NUM_FEATURES:
        raise ValueError(f"values have {values.shape[-1]} columns, the contract has {NUM_FEATURES}")


@dataclass(frozen=True)
class WindowRule:
    """When out-of-contract values make a window unusable: dropped by the trainer, refused by the server.

    A few out-of-contract values are a glitch (the trainer repairs them as lost values,
    the server serves the window and counts them); many in one column mean that the
    exporter fills the column differently, and the model would misread every window.
    """

    # A column out of contract in more of a window's minutes than this is unusable: as many
    # as windowing interpolates over (WindowingOptions.max_gap_minutes).
    max_minutes_per_column: int = 5
    # Share of all a window's values out of contract above which it is unusable (1 % of a
    # 60 x 129 window is 77 values: too many to repair, whatever the columns).
    max_share: float = 0.01

    def __post_init__(self) -> None:
        if self.max_minutes_per_column < 0 or not 0 <= self.max_share <= 1:
            raise ValueError(
                f"WindowRule(max_minutes_per_column={self.max_minutes_per_column}, "
                f"max_share={self.max_share}): use minutes >= 0 and a share in [0, 1]"
            )

    def unusable(self, column_counts: np.ndarray, steps: int) -> np.ndarray:
        """Whether each window is unusable, from its out-of-contract counts per column (..., 129)."""
        too_many = column_counts.sum(axis=-1) > self.max_share * steps * column_counts.shape[-1]
        return (column_counts.max(axis=-1) > self.max_minutes_per_column) | too_many


WINDOW_RULE = WindowRule()


def worst_columns(column_counts: np.ndarray, limit: int = 5) -> list[tuple[str, int]]:
    """The columns with the most out-of-contract values, most first, as (name, count); none if clean."""
    order = np.argsort(-column_counts, kind="stable")[:limit]
    return [(FEATURE_NAMES[i], int(column_counts[i])) for i in order if column_counts[i] > 0]


def describe_counts(column_counts: np.ndarray, limit: int = 5) -> str:
    """ "3 values out of contract in 2 columns (worst: kpi_x 2, lat_y 1)", or "no value out of contract"."""
    total = int(column_counts.sum())
    if not total:
        return "no value out of contract"
    worst = ", ".join(f"{name} {count}" for name, count in worst_columns(column_counts, limit))
    columns = int((column_counts > 0).sum())
    return f"{_plural(total, 'value')} out of contract in {_plural(columns, 'column')} (worst: {worst})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# Where the table stands in docs/data-contract.md.
TABLE_BEGIN = "<!-- contract:begin -->\n"
TABLE_END = "<!-- contract:end -->"


def contract_table() -> str:
    """The contract as the markdown table of docs/data-contract.md."""
    rows = ["| # | column | family | kind | unit | valid range | meaning |", "|---:|---|---|---|---|---|---|"]
    for i, s in enumerate(STATISTICS):
        low, high = _number(s.minimum), _number(s.maximum)
        rows.append(
            f"| {i} | `{s.name}` | {s.family} | {s.kind.value} | {s.unit} | {low} to {high} | {s.meaning} |"
        )
    return "\n".join(rows) + "\n"


def with_contract_table(markdown: str) -> str:
    """markdown with the text between the contract markers replaced by contract_table()."""
    head, found, rest = markdown.partition(TABLE_BEGIN)
    if not found or TABLE_END not in rest:
        raise ValueError(f"no {TABLE_BEGIN.strip()} ... {TABLE_END} block to fill")
    return head + TABLE_BEGIN + contract_table() + TABLE_END + rest.split(TABLE_END, 1)[1]
