"""A node's condition life cycle: when a diagnosed fault becomes an incident, and when it ends.

A diagnosis that flickers for a minute must not page anyone, and a window holds a fault
for an hour after it ends. So, per node, from one diagnosis a minute:

- raise: a fault (or unknown) label holds at least raise_minutes of the last
  of_last_minutes minutes, including the newest (traffic a diagnosis mistook for one
  condition is not raised as it when another begins), and the node's newest minutes
  depart from the network's normal
  (in units of each statistic's normal range, traffic/baseline.py): the raise_statistics
  statistics departing most do so by raise_departure on average, raise_departing_statistics of
  them beyond clear_departure, or one statistic has
  departed by raise_departure in each of the last raise_persistent_minutes minutes. A
  window that still holds a fault which has ended raises nothing, nor does traffic a
  diagnosis mistakes for a fault while the statistics stay within their normal range,
  nor one sparse count that ticks once (healthy traffic does that). The statistics
  departing most form the incident's *signature*;
- clear: clear_minutes minutes in a row diagnosed normal, or signature_clear_minutes in a
  row with every signature statistic back within clear_departure, or within
  clear_share_of_peak of the most it departed while raised (a decaying fault, such as a
  registration storm, is over long before its sparsest counts stop; by the clock: a minute
  without a diagnosis does not break the run, a silence over MAX_SILENT_MINUTES does); The
  window's diagnosis lags the traffic by up to an hour; the signature does not;
- change: while raised, another fault diagnosed in every one of the last of_last_minutes
  minutes (raise_minutes at least) ends the incident and raises a new one;
- after a clear by signature, the same label is not raised again until it has not been
  diagnosed for of_last_minutes (the window no longer holds the ended fault) or its
  signature departs again by reraise_departure, and by reraise_share_of_peak of its peak,
  for reraise_minutes minutes in a row (the tail of a fault, or a flare of a fault easing
  off within its hour, is not a new incident).

Pure logic over numbers: the monitor feeds it and turns its transitions into events.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from faultprint.server.references.index import Match

NORMAL = "normal"
UNKNOWN = "unknown"
# A node without a diagnosis for longer than this (as many minutes as windowing repairs) has
# fallen silent: a run of minutes back to normal starts again after it.
MAX_SILENT_MINUTES = 5


@dataclass(frozen=True)
class LifeCycleOptions:
    """When incidents are raised and cleared (server settings incident_*).

    The defaults were measured by replaying the life cycle over every minute of simulated
    networks never trained on and of the foreign operators' traffic, one option moved at a
    time (benchmarks/life_cycle_tuning.py, benchmarks/results/life-cycle-tuning.md)."""

    # A fault or unknown label is raised when it is diagnosed in at least this many of
    # the node's last incident_of_last_minutes minutes.
    raise_minutes: int = 3
    # The minutes raise_minutes is counted over.
    of_last_minutes: int = 5
    # An incident is cleared after this many minutes in a row diagnosed normal.
    clear_minutes: int = 3
    # ... or after this many minutes in a row with its signature back to normal while the
    # diagnoses still name the fault (its window holds the fault for up to an hour after).
    signature_clear_minutes: int = 3
    # Statistics that form an incident's signature (those departing most from normal).
    signature_statistics: int = 5
    # An incident is raised only while the incident_raise_statistics statistics departing most
    # from the network's normal depart at least this much on average, in units of their normal
    # range (1: as far as the 99th percentile of normal minutes). 0 turns signatures off: raise
    # and clear on the diagnoses alone.
    raise_departure: float = 2.0
    # The statistics averaged for incident_raise_departure: one sparse count ticking once departs
    # by 2-3 units in healthy traffic, a fault moves several statistics.
    raise_statistics: int = 5
    # ... of which at least this many (all of them, when fewer) must depart beyond
    # incident_clear_departure: one event that two statistics count (a REGISTER answered 408 and
    # its timer F expiry) departs by 4-5 in each, enough for the average alone. 0: the average
    # alone.
    raise_departing_statistics: int = 3
    # ... or raised while one statistic has departed by incident_raise_departure in each of this
    # many minutes in a row (a code a healthy node never answers, appearing steadily on a quiet
    # node; one tick departs for departure_minutes only). 0: never on one statistic alone.
    raise_persistent_minutes: int = 8
    # A signature statistic within this departure is back to normal (1: within the range of
    # the network's healthy minutes; a fault healing to a third of its height, such as an
    # S-CSCF failover, still departs by 1-1.5)...
    clear_departure: float = 1.0
    # ... as is one within this share of the most it departed while the incident was raised.
    clear_share_of_peak: float = 0.2
    # After a clear by signature, the same label is raised again (while the window still
    # holds the ended fault) only when a signature statistic departs this much...
    reraise_departure: float = 4.0
    # ... and this share of the most it departed while the cleared incident was raised...
    reraise_share_of_peak: float = 0.5
    # ... in this many minutes in a row.
    reraise_minutes: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.raise_minutes <= self.of_last_minutes:
            raise ValueError(
                f"incident_raise_minutes ({self.raise_minutes}) must be between 1 and "
                f"incident_of_last_minutes ({self.of_last_minutes})"
            )
        if not 0 <= self.clear_departure <= self.raise_departure <= self.reraise_departure:
            raise ValueError(
                "incident departures must rise (0 <= clear <= raise <= reraise_departure), "
                f"got {self.clear_departure}, {self.raise_departure} and {self.reraise_departure}"
            )
        if self.raise_persistent_minutes < 0:
            raise ValueError(
                f"incident_raise_persistent_minutes must be at least 0, got {self.raise_persistent_minutes}"
            )
        counts = ("clear_minutes", "signature_clear_minutes", "signature_statistics", "reraise_minutes")
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"incident_{name} must be at least 1, got {getattr(self, name)}")
        if not (0 <= self.clear_share_of_peak < 1 and 0 <= self.reraise_share_of_peak <= 1):
            raise ValueError(
                "incident_clear_share_of_peak must be in [0, 1) and incident_reraise_share_of_peak in "
                f"[0, 1], got {self.clear_share_of_peak} and {self.reraise_share_of_peak}"
            )
        if not 1 <= self.raise_statistics <= self.signature_statistics:
            raise ValueError(
                f"incident_raise_statistics ({self.raise_statistics}) must be between 1 and "
                f"incident_signature_statistics ({self.signature_statistics})"
            )
        if self.raise_departing_statistics < 0:
            raise ValueError(
                "incident_raise_departing_statistics must be at least 0, "
                f"got {self.raise_departing_statistics}"
            )


@dataclass(frozen=True, slots=True)
class MinuteDiagnosis:
    """One minute's diagnosis of a node's window ending at that minute."""

    minute: int
    label: str  # "normal", a fault, or "unknown"
    distance: float = 0.0
    margin: float | None = None
    case_id: str = ""

    @classmethod
    def of(cls, minute: int, match: Match) -> MinuteDiagnosis:
        """A window's match as the life cycle reads it: traffic near no case is "unknown"."""
        label = UNKNOWN if match.verdict == UNKNOWN else match.label
        case_id = match.neighbours[0].case_id if match.neighbours else ""
        return cls(minute, label, match.distance, match.margin, case_id)


@dataclass
class OpenIncident:
    """The incident a node has raised, with what raised it."""

    label: str
    start_minute: int
    model_version: str
    supporting_minutes: int
    distance: float
    margin: float | None
    case_id: str
    # Column indices of the signature, and their departures over the newest minutes when raised.
    signature: list[int] = field(default_factory=list)
    departures: list[float] = field(default_factory=list)
    # The most each signature statistic departed (absolute) while raised.
    peaks: list[float] = field(default_factory=list)
    # [column, departure] pairs where the node departs most from the matched case (filled
    # when the onset is written).
    reference: list[list[float]] = field(default_factory=list)
    # The first minute of the current run back to normal (-1: none).
    first_normal_minute: int = -1
    # Whether the run counted minutes back by signature while the diagnoses named the fault.
    run_by_signature: bool = False

    @property
    def incident_id(self) -> str:
        return f"{self.label}@{self.start_minute}"


@dataclass(frozen=True, slots=True)
class Transition:
    """An incident raised ("onset") or ended ("abated", with the minute it ended)."""

    kind: str
    incident: OpenIncident
    end_minute: int = -1


@dataclass
class NodeLifeCycle:
    """One node's condition: its recent diagnoses and its open incident, if any."""

    of_last_minutes: int
    last_minute: int = -1
    recent: deque[MinuteDiagnosis] = field(default_factory=deque)
    incident: OpenIncident | None = None
    # A label cleared by its signature while its diagnoses still held it, and that signature.
    suppressed: str = ""
    suppressed_signature: list[int] = field(default_factory=list)
    # The most each of that signature's statistics departed while it was raised.
    suppressed_peaks: list[float] = field(default_factory=list)
    # The last minute the suppressed label was diagnosed: the suppression lifts once
    # of_last_minutes pass without it.
    suppressed_seen: int = -1
    # The minute the current condition (normal or the incident) began.
    since_minute: int = -1
    # Minutes in a row the suppressed label was held with its signature departing by
    # reraise_departure.
    reraise_run: int = 0
    # Per statistic departing by raise_departure this minute, the minutes in a row it has.
    departing_runs: dict[int, int] = field(default_factory=dict)

    def observe(
        self, diagnosis: MinuteDiagnosis, departure: np.ndarray | None, options: LifeCycleOptions,
        model_version: str,
    ) -> list[Transition]:  # fmt: skip
        """Applies one minute's diagnosis; departure is the node's newest minutes' departure
        from normal per statistic (None where the network has no baseline). A minute at or
        before the last one applied changes nothing (a resend, or a late answer)."""
        if diagnosis.minute <= self.last_minute:
            return []
        previous = self.last_minute
        self.last_minute = diagnosis.minute
        self.recent.append(diagnosis)
        # The last of_last_minutes minutes: a minute without a diagnosis counts as not held.
        while self.recent[0].minute <= diagnosis.minute - self.of_last_minutes:
            self.recent.popleft()
        if self.incident is not None and diagnosis.minute - previous - 1 > MAX_SILENT_MINUTES:
            incident = self.incident  # the node fell silent: a run back to normal starts again
            incident.first_normal_minute, incident.run_by_signature = -1, False
        if self.since_minute < 0:
            self.since_minute = diagnosis.minute
        if self.suppressed and diagnosis.label == self.suppressed:
            self.suppressed_seen = diagnosis.minute
        signatures = departure is not None and options.raise_departure > 0
        if options.raise_persistent_minutes:
            self._count_departing(
                departure if signatures else None, options, diagnosis.minute - previous == 1
            )
        held = self._held(options.raise_minutes)
        transitions: list[Transition] = []
        if self.incident is not None:
            transitions += self._follow(diagnosis, held, departure if signatures else None, options)
        if self.incident is None:
            if transitions:  # an incident that ended took its minutes
                held = self._held(options.raise_minutes)
            raised = self._raise(held, departure if signatures else None, options, model_version)
            if raised is not None:
                transitions.append(raised)
        return transitions

    def _held(self, raise_minutes: int) -> str:
        """The newest minute's label when it is a fault (or unknown) diagnosed in at least
        raise_minutes of the recent minutes, or "": traffic a diagnosis mistook for one
        condition is not raised as it when another begins."""
        label = self.recent[-1].label
        if not label or label == NORMAL:
            return ""
        return label if sum(d.label == label for d in self.recent) >= raise_minutes else ""

    def _follow(
        self, diagnosis: MinuteDiagnosis, held: str, departure: np.ndarray | None, options: LifeCycleOptions
    ) -> list[Transition]:
        incident = self.incident
        assert incident is not None
        if held and held != incident.label and self._holds_alone(held, options.raise_minutes):
            return [self._end(self._first_minute_of(held), suppress=False)]
        back = diagnosis.label == NORMAL
        by_signature = False
        if not back and departure is not None and incident.signature:
            now = np.abs(departure[incident.signature])
            peaks = np.maximum(incident.peaks or now, now)
            incident.peaks = peaks.tolist()
            back = by_signature = bool(
                np.all(now < np.maximum(options.clear_departure, options.clear_share_of_peak * peaks))
            )
        if not back:
            incident.first_normal_minute, incident.run_by_signature = -1, False
            return []
        if incident.first_normal_minute < 0:
            incident.first_normal_minute = diagnosis.minute
        incident.run_by_signature = incident.run_by_signature or by_signature
        # Minutes back to normal by the clock: a minute that brought no diagnosis (lost in
        # export, or its window waiting for the next minute's repair) does not restart the run.
        # While the diagnoses still name the fault, the signature must stay back for longer:
        # a fault that eases off for a few minutes is not over.
        needed = options.signature_clear_minutes if incident.run_by_signature else options.clear_minutes
        if diagnosis.minute - incident.first_normal_minute + 1 < needed:
            return []
        return [self._end(incident.first_normal_minute, suppress=diagnosis.label == incident.label)]

    def _end(self, end_minute: int, suppress: bool) -> Transition:
        incident = self.incident
        assert incident is not None
        self.incident = None
        self.since_minute = end_minute
        # What raised the incident cannot raise the next: only diagnoses from its end on count.
        while self.recent and self.recent[0].minute < end_minute:
            self.recent.popleft()
        self.suppressed = incident.label if suppress else ""
        self.suppressed_signature = list(incident.signature) if suppress else []
        self.suppressed_peaks = list(incident.peaks) if suppress else []
        self.suppressed_seen = self.last_minute
        self.reraise_run = 0
        return Transition("abated", incident, end_minute)

    def _raise(
        self, held: str, departure: np.ndarray | None, options: LifeCycleOptions, model_version: str
    ) -> Transition | None:
        if self.suppressed and self.last_minute - self.suppressed_seen >= self.of_last_minutes:
            self.suppressed, self.suppressed_signature, self.suppressed_peaks = "", [], []
        if not held or held != self.suppressed:
            self.reraise_run = 0
        if not held:
            return None
        if held == self.suppressed:
            departs = departure is not None and self._flares(departure, options)
            self.reraise_run = self.reraise_run + 1 if departs else 0
            if self.reraise_run < options.reraise_minutes:
                return None  # the window still holds the fault its signature showed over
        signature: list[int] = []
        if departure is not None:
            signature = largest(departure, options.signature_statistics)
            persistent = options.raise_persistent_minutes > 0 and (
                max(self.departing_runs.values(), default=0) >= options.raise_persistent_minutes
            )
            if not persistent and not _departs(departure, signature[: options.raise_statistics], options):
                return None  # the window holds a fault the newest minutes no longer show
        self.suppressed, self.suppressed_signature, self.suppressed_peaks, self.reraise_run = "", [], [], 0
        supporting = [d for d in self.recent if d.label == held]
        margins = [d.margin for d in supporting if d.margin is not None]
        cases = Counter(d.case_id for d in supporting)
        start = supporting[0].minute
        incident = OpenIncident(
            label=held, start_minute=start, model_version=model_version, supporting_minutes=len(supporting),
            distance=float(np.mean([d.distance for d in supporting])),
            margin=float(np.mean(margins)) if margins else None, case_id=cases.most_common(1)[0][0],
            signature=signature,
            departures=[float(departure[c]) for c in signature] if departure is not None else [],
            peaks=[abs(float(departure[c])) for c in signature] if departure is not None else [],
        )  # fmt: skip
        self.incident = incident
        self.since_minute = start
        return Transition("onset", incident)

    def _count_departing(
        self, departure: np.ndarray | None, options: LifeCycleOptions, next_minute: bool
    ) -> None:
        """Counts, per statistic, the minutes in a row it departs by raise_departure (a skipped
        minute starts every count again)."""
        if departure is None:
            self.departing_runs = {}
            return
        columns = (np.abs(departure) >= options.raise_departure).nonzero()[0].tolist()
        runs = self.departing_runs if next_minute else {}
        self.departing_runs = {c: runs.get(c, 0) + 1 for c in columns} if columns else {}

    def _flares(self, departure: np.ndarray, options: LifeCycleOptions) -> bool:
        """Whether a statistic of the suppressed signature departs by reraise_departure and by
        reraise_share_of_peak of its peak."""
        columns = self.suppressed_signature
        if not columns:
            return False
        peaks = np.asarray(self.suppressed_peaks or np.zeros(len(columns)), dtype=np.float64)
        needed = np.maximum(options.reraise_departure, options.reraise_share_of_peak * peaks)
        return bool(np.any(np.abs(departure[columns]) >= needed))

    def _holds_alone(self, label: str, raise_minutes: int) -> bool:
        """Whether label is every diagnosis of the recent minutes, raise_minutes of them at least:
        what it takes for another fault to replace a raised one (a diagnosis that wavers
        between two faults does not split an incident)."""
        return len(self.recent) >= raise_minutes and all(d.label == label for d in self.recent)

    def _first_minute_of(self, label: str) -> int:
        return next(d.minute for d in self.recent if d.label == label)

    def to_dict(self) -> dict[str, Any]:
        """The state as plain values (JSON), to be kept in Redis and restored on any replica."""
        return {
            "last_minute": self.last_minute,
            # A normal minute is its minute alone: its distance and case never raise anything.
            "recent": [
                d.minute if d.label == NORMAL else [d.minute, d.label, d.distance, d.margin, d.case_id]
                for d in self.recent
            ],
            "incident": asdict(self.incident) if self.incident else None,
            "suppressed": self.suppressed,
            "suppressed_signature": self.suppressed_signature,
            "suppressed_peaks": self.suppressed_peaks,
            "suppressed_seen": self.suppressed_seen,
            "since_minute": self.since_minute,
            "reraise_run": self.reraise_run,
            "departing_runs": {str(c): run for c, run in self.departing_runs.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], of_last_minutes: int) -> NodeLifeCycle:
        recent = deque(
            MinuteDiagnosis(d, NORMAL) if isinstance(d, int) else MinuteDiagnosis(*d)
            for d in state["recent"][-of_last_minutes:]
        )
        incident = OpenIncident(**state["incident"]) if state.get("incident") else None
        return cls(
            of_last_minutes, state["last_minute"], recent, incident, state.get("suppressed", ""),
            list(state.get("suppressed_signature", [])), list(state.get("suppressed_peaks", [])),
            state.get("suppressed_seen", -1),
            state.get("since_minute", -1), state.get("reraise_run", 0),
            {int(c): int(run) for c, run in state.get("departing_runs", {}).items()},
        )  # fmt: skip


def largest(departure: np.ndarray, count: int) -> list[int]:
    """The count columns departing most from normal (by magnitude), largest first."""
    order = np.argsort(-np.abs(departure), kind="stable")[:count]
    return [int(c) for c in order]


def _departs(departure: np.ndarray, columns: list[int], options: LifeCycleOptions) -> bool:
    """Whether columns depart by raise_departure on average, raise_departing_statistics of them
    beyond clear_departure."""
    if not columns:
        return False
    moved = np.abs(departure[columns])
    return bool(
        moved.mean() >= options.raise_departure
        and (moved > options.clear_departure).sum() >= min(options.raise_departing_statistics, len(columns))
    )
