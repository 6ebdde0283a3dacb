"""The node monitor: minute streams in, each node's window diagnosed every minute, incidents out.

A minute stream's request carries minutes of many nodes. Each minute goes into its
node's ring (node_windows.py); a minute that becomes its node's newest with a usable
window queues that window on the encoder's batch scheduler, beside every other caller's
windows, keyed by node for fairness. Each answer updates the node's latest diagnosis
(GetNodeDiagnosis) and its condition life cycle (life_cycle.py), whose transitions
become incident events. A flush task writes what changed to Redis (node_store.py) and
only then acknowledges the requests whose minutes it holds.

A node first seen by this replica is restored from Redis before its minutes are taken:
a probe that reconnects here after a failover resumes with its window and condition.
Nodes nobody sends to for node_idle_expiry_s leave memory; Redis keys expire with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from faultprint.registry.ids import is_valid_id
from faultprint.server.batching.session import (
    Embedded,
    Encoder,
    EncodeRequest,
    fill_diagnosis,
    require_network,
)
from faultprint.server.model.host import ServingState
from faultprint.server.monitoring.explanation import (
    SHOWN,
    ReferenceProfiles,
    baseline_of,
    departure,
    departures,
    families,
)
from faultprint.server.monitoring.life_cycle import (
    NORMAL,
    UNKNOWN,
    LifeCycleOptions,
    MinuteDiagnosis,
    NodeLifeCycle,
    Transition,
    largest,
)
from faultprint.server.monitoring.node_store import EventWrite, NodeStore, NodeWrite
from faultprint.server.monitoring.node_windows import Arrival, NodeKey, NodeWindows, clean_rows
from faultprint.server.references.node_state import NodeStateWriter
from faultprint.server.rpc.errors import Unavailable
from faultprint.server.security.access import CALLER
from faultprint.v1 import diagnosis_pb2, incident_service_pb2, probe_service_pb2

log = logging.getLogger(__name__)

SEVERITIES: dict[str, incident_service_pb2.Severity] = {
    "critical": incident_service_pb2.SEVERITY_CRITICAL,
    "major": incident_service_pb2.SEVERITY_MAJOR,
    "minor": incident_service_pb2.SEVERITY_MINOR,
    "warning": incident_service_pb2.SEVERITY_WARNING,
}
_EVENT_TYPES = {
    "onset": ("ONSET", incident_service_pb2.INCIDENT_EVENT_TYPE_ONSET),
    "abated": ("ABATED", incident_service_pb2.INCIDENT_EVENT_TYPE_ABATED),
}


@dataclass(frozen=True)
class MonitorOptions:
    """Minute streams and the node state they keep."""

    # Minutes one StreamMinutes request may carry.
    max_minutes_per_request: int = 10_000
    # Node-minutes one minute stream may hold between reading and acknowledging them: a
    # sender that outruns the server stops being read here.
    stream_max_unacknowledged_minutes: int = 20_000
    # Seconds between writes of node windows, conditions and incidents to Redis; a minute
    # is acknowledged after the write that holds it.
    node_flush_interval_s: float = 0.2
    # Seconds a node's window and condition are kept, in memory and in Redis, after its
    # last minute arrived.
    node_idle_expiry_s: float = 6 * 3600.0
    # Seconds a node's incident history is kept after its last incident.
    incident_history_ttl_s: float = 30 * 24 * 3600.0
    # Incident events the Redis Stream keeps (approximately; the oldest go first).
    incident_stream_max_events: int = 1_000_000
    # Minutes averaged for a node's departure from its network's normal (signatures,
    # explanations).
    departure_minutes: int = 3
    # Severity per label, such as "hss_unreachable=critical,overload=warning"; other faults
    # are major and unknown traffic minor.
    incident_severities: str = ""

    def __post_init__(self) -> None:
        counts = ("max_minutes_per_request", "stream_max_unacknowledged_minutes",
                  "incident_stream_max_events",
                  "departure_minutes")  # fmt: skip
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if (
            self.node_flush_interval_s <= 0
            or self.node_idle_expiry_s <= 0
            or self.incident_history_ttl_s <= 0
        ):
            raise ValueError(
                "node_flush_interval_s, node_idle_expiry_s and incident_history_ttl_s must be positive"
            )
        self.severities()

    def severities(self) -> dict[str, incident_service_pb2.Severity]:
        """incident_severities as label -> Severity."""
        table: dict[str, incident_service_pb2.Severity] = {}
        for item in filter(None, (i.strip() for i in self.incident_severities.split(","))):
            label, _, severity = item.partition("=")
            if severity.strip().lower() not in SEVERITIES:
                raise ValueError(
                    f"incident_severities item {item!r}: use label=severity with severity one of "
                    f"{', '.join(SEVERITIES)}"
                )
            table[label.strip()] = SEVERITIES[severity.strip().lower()]
        return table


@dataclass
class Receipt:
    """One StreamMinutes request until its acknowledgement is sent."""

    response: probe_service_pb2.StreamMinutesResponse
    deliver: Callable[[Receipt], None]
    # Minutes the request carried (its share of the stream's unacknowledged budget).
    size: int = 0
    # The stream's key in the batch scheduler: streams, not nodes, share the encoder fairly.
    stream: object = None
    # The minutes it brought that are new to their node: acknowledged once Redis holds each.
    taken: list[tuple[NodeKey, int]] = field(default_factory=list)
    outstanding: int = 1  # minutes not settled, plus one held while the request is being read


@dataclass(frozen=True, slots=True)
class _Pending:
    """A node's window waiting for the encoder."""

    key: NodeKey
    minute: int
    request: EncodeRequest
    receipt: Receipt


@dataclass(slots=True)
class _Event:
    kind: str
    minute: int
    transition: Transition
    departure: np.ndarray | None
    state: ServingState
    time_ns: int


@dataclass
class MonitorStats:
    """What minute streams brought, since start (server/telemetry.py reports them)."""

    minutes: int = 0
    duplicates: int = 0
    late: int = 0
    reordered: int = 0
    diagnosed: int = 0
    not_diagnosed: int = 0
    refused: int = 0
    events: int = 0
    flushes_failed: int = 0
    expired_nodes: int = 0

    def outcomes(self) -> dict[str, int]:
        """The minutes' outcomes and the events, as telemetry reports them."""
        names = ("diagnosed", "not_diagnosed", "duplicates", "late", "reordered", "refused")
        return {**{name: getattr(self, name) for name in names}, "incident_events": self.events}


class NodeMonitor:
    def __init__(
        self, encoder: Encoder, writer: NodeStateWriter, store: NodeStore, profiles: ReferenceProfiles,
        options: MonitorOptions, life_cycle: LifeCycleOptions,
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.writer = writer
        self.store = store
        self.profiles = profiles
        self.options = options
        self.life_cycle = life_cycle
        self.severities = options.severities()
        self.stats = MonitorStats()
        self.windows: NodeWindows | None = None
        self.conditions: dict[NodeKey, NodeLifeCycle] = {}
        self._dirty_rows: dict[NodeKey, set[int]] = {}
        self._dirty: set[NodeKey] = set()
        self._events: dict[NodeKey, list[_Event]] = {}
        self._due: list[Receipt] = []
        self._loading: dict[NodeKey, asyncio.Future[None]] = {}
        self._backlog: deque[_Pending] = deque()
        self._stopping = False
        self._quiesced = asyncio.Event()
        # Per node, the minutes whose windows wait for the encoder, oldest first; and the
        # frontier (see frontier()) each node was last written to Redis with.
        self._in_flight: dict[NodeKey, deque[int]] = {}
        self._durable: dict[NodeKey, int] = {}
        self._feeder: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_expiry = time.monotonic()

    def open_incidents(self) -> dict[str, int]:
        """Open incidents among the nodes followed, by label (one pass over them: for telemetry)."""
        return dict(Counter(c.incident.label for c in self.conditions.values() if c.incident is not None))

    # -- taking minutes -------------------------------------------------------------------

    async def take(self, request: probe_service_pb2.StreamMinutesRequest, receipt: Receipt) -> None:
        """Takes a request's minutes; receipt.deliver is called once all are settled and written.
        Raises Unavailable once the replica is stopping (after its last write, see quiesce)."""
        if self._stopping:
            await self._quiesced.wait()
            raise Unavailable(
                "this replica is stopping: reconnect to another and resend what was not acknowledged"
            )
        windows = self._windows()
        response = receipt.response
        expected = windows.features * 4
        taken: list[tuple[int, probe_service_pb2.NodeMinute]] = []
        too_many = len(request.minutes) > self.options.max_minutes_per_request
        caller = CALLER.get()
        for index, minute in enumerate(request.minutes):
            problem = (
                _problem(minute, expected)
                if not too_many
                else (
                    f"the request carries {len(request.minutes)} minutes; at most "
                    f"{self.options.max_minutes_per_request} per request"
                )
            )
            code = _INVALID_ARGUMENT
            if not problem and caller is not None and (denied := caller.refusal(minute.network)):
                code, problem = denied.code.value[0], str(denied)
            if problem:
                response.refused.add(index=index, code=code, message=problem)
                self.stats.refused += 1
            else:
                taken.append((index, minute))
        await self._restore(
            {(m.network, m.node) for _, m in taken if windows.slot((m.network, m.node)) is None}
        )
        state = self.encoder.host.require()
        if taken:  # decoded and checked for repairs as one array: no per-value work per minute
            rows = np.frombuffer(b"".join(m.packed_values for _, m in taken), "<f4").reshape(len(taken), -1)
            cleans = clean_rows(rows).tolist()
            for k, (_, minute) in enumerate(taken):
                self._take_one(windows, state, minute, rows[k], cleans[k], receipt)
        self._settle(receipt)

    def _take_one(
        self,
        windows: NodeWindows,
        state: ServingState,
        minute: probe_service_pb2.NodeMinute,
        row: np.ndarray,
        clean: bool,
        receipt: Receipt,
    ) -> None:
        key = (minute.network, minute.node)
        slot = windows.slot(key)
        if slot is None:  # expired while its restore was awaited: take it fresh
            slot = windows.add(key)
        arrival = windows.put(slot, minute.minute, row, clean)
        response = receipt.response
        self.stats.minutes += 1
        if arrival is Arrival.DUPLICATE:
            response.duplicates += 1
            self.stats.duplicates += 1
            return
        if arrival is Arrival.LATE:
            response.late += 1
            self.stats.late += 1
            return
        response.accepted += 1
        receipt.taken.append((key, minute.minute))
        self._dirty_rows.setdefault(key, set()).add(minute.minute % windows.steps)
        self._dirty.add(key)
        if arrival is Arrival.REORDERED:
            response.reordered += 1
            self.stats.reordered += 1
            return
        window = windows.window(slot)
        if window is None or not self._diagnosable(state, minute.network):
            response.not_diagnosed += 1
            self.stats.not_diagnosed += 1
            return
        receipt.outstanding += 1
        self._in_flight.setdefault(key, deque()).append(minute.minute)
        pending = _Pending(key, minute.minute, EncodeRequest(window, minute.network), receipt)
        if self._backlog or not self._offer(pending):
            self._backlog.append(pending)
            if self._feeder is None or self._feeder.done():
                self._feeder = asyncio.create_task(self._feed(), name="node-monitor-feed")

    def _offer(self, pending: _Pending) -> bool:
        """Queues a window on the encoder; False while the batch queue is full (then it waits
        in the backlog: a minute stream is slowed down, never its diagnoses dropped)."""
        scheduler = self.encoder.scheduler
        if scheduler.queue_depth >= scheduler.options.max_queue_size:
            return False
        try:
            future = self.encoder.enqueue(pending.request, pending.receipt.stream, None)
        except Exception as exc:  # the server stops: the minute stays unsettled (see _diagnosed)
            log.debug("minute %d of %s not diagnosed: %s", pending.minute, pending.key, exc)
            return True
        future.add_done_callback(lambda f: self._diagnosed(pending.key, pending.minute, pending.receipt, f))
        return True

    async def _feed(self) -> None:
        """Moves the backlog onto the encoder as batches free room, in arrival order."""
        while self._backlog:
            if self._offer(self._backlog[0]):
                self._backlog.popleft()
            else:
                await asyncio.sleep(0.002)

    def _landed(self, key: NodeKey, minute: int) -> None:
        """A window's diagnosis is applied or given up: the node's frontier may move on."""
        waiting = self._in_flight.get(key)
        if waiting is not None:
            waiting.remove(minute)
            if not waiting:
                del self._in_flight[key]
        self._dirty.add(key)

    def frontier(self, key: NodeKey, slot: int | None) -> int:
        """The node's newest minute with every minute up to it settled (stored, and its diagnosis
        applied or given up): what Redis may hold of its ring for another replica to resume."""
        waiting = self._in_flight.get(key)
        if waiting:
            return waiting[0] - 1
        return self._windows().newest(slot) if slot is not None else -1

    def _undiagnosed(self, receipt: Receipt) -> None:
        receipt.response.not_diagnosed += 1
        self.stats.not_diagnosed += 1
        self._settle(receipt)

    @staticmethod
    def _diagnosable(state: ServingState, network: str) -> bool:
        try:
            require_network(state, network)
        except Exception:
            return False
        return True

    async def _restore(self, keys: set[NodeKey]) -> None:
        """Brings nodes this replica has not seen from Redis: their rings and conditions."""
        waits = [self._loading[k] for k in keys if k in self._loading]
        todo = [k for k in keys if k not in self._loading]
        if todo:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for k in todo:
                self._loading[k] = done
            try:
                restored = await self.store.load(todo)
                windows = self._windows()
                for key, found in zip(todo, restored, strict=True):
                    if windows.slot(key) is None:
                        windows.add(key, found.ring, through=found.frontier)
                    if found.state is not None and key not in self.conditions:
                        self.conditions[key] = NodeLifeCycle.from_dict(
                            found.state, self.life_cycle.of_last_minutes
                        )
            finally:
                for k in todo:
                    del self._loading[k]
                done.set_result(None)
        for wait in waits:
            await wait

    # -- diagnoses and the life cycle -----------------------------------------------------

    def _diagnosed(
        self, key: NodeKey, minute: int, receipt: Receipt, future: asyncio.Future[Embedded]
    ) -> None:
        if future.cancelled() or self.encoder.scheduler.closed:
            # The server stops: the minute stays unsettled, so Redis's frontier stays before it
            # and its request is never acknowledged; its sender resends it to another replica.
            return
        self._landed(key, minute)
        try:
            embedded = future.result()
            state = embedded.state
            match = embedded.match
            if match is None:
                index = require_network(state, key[0])
                match = index.match(
                    embedded.embedding, self.encoder.default_top_k, state.runner.metadata.distance_threshold
                )
            diagnosis = diagnosis_pb2.Diagnosis()
            fill_diagnosis(diagnosis, key[0], key[1], match, state)
            self.writer.record(diagnosis, embedded.embedding)
            self._observe(key, MinuteDiagnosis.of(minute, match), state)
            receipt.response.diagnosed += 1
            self.stats.diagnosed += 1
        except Exception as exc:
            log.debug("minute %d of %s not diagnosed: %s", minute, key, exc)
            self._undiagnosed(receipt)
            return
        self._settle(receipt)

    def _observe(self, key: NodeKey, diagnosis: MinuteDiagnosis, state: ServingState) -> None:
        life = self.conditions.get(key)
        if life is None:
            life = self.conditions[key] = NodeLifeCycle(self.life_cycle.of_last_minutes)
        moved = self._departure(key, diagnosis.minute, state) if _needs_departure(life, diagnosis) else None
        transitions = life.observe(diagnosis, moved, self.life_cycle, state.version)
        self._dirty.add(key)
        if transitions:
            now = time.time_ns()
            self._events.setdefault(key, []).extend(
                _Event(t.kind, diagnosis.minute, t, moved, state, now) for t in transitions
            )
            self.stats.events += len(transitions)

    def _departure(self, key: NodeKey, minute: int, state: ServingState) -> np.ndarray | None:
        """The node's departure from normal over the minutes up to the diagnosed one (later ones
        may have arrived while its window was in the encoder)."""
        baseline = baseline_of(state, key[0])
        windows = self.windows
        slot = windows.slot(key) if windows else None
        if baseline is None or windows is None or slot is None:
            return None
        return departure(windows.newest_rows(slot, self.options.departure_minutes, minute), baseline)

    def _settle(self, receipt: Receipt) -> None:
        receipt.outstanding -= 1
        if receipt.outstanding == 0:
            self._due.append(receipt)

    # -- writing behind -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="node-monitor-flush")

    async def quiesce(self, timeout_s: float = 5.0) -> None:
        """Before a replica stops: takes no more minutes, lets the windows already queued be
        diagnosed (for up to timeout_s), writes everything settled and acknowledges it; only
        then do minute streams end (UNAVAILABLE), so the replica their senders move to resumes
        from a Redis this one will not write to again."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # Batch callbacks empty these in many places; a 10 ms poll for a few seconds at shutdown.
        while (self._in_flight or self._backlog) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await self.flush()
        self._quiesced.set()

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.options.node_flush_interval_s)
            await self.flush()
            self._expire_idle()

    async def flush(self) -> None:
        """Writes what changed since the last flush, then acknowledges the requests whose minutes
        Redis now holds. If Redis fails, everything is kept for the next flush and nothing is
        acknowledged."""
        if not (self._dirty or self._due):
            return
        dirty, rows, events, due = self._dirty, self._dirty_rows, self._events, self._due
        self._dirty, self._dirty_rows, self._events, self._due = set(), {}, {}, []
        # One snapshot, taken with no await: each node's rows, frontier and state agree with the
        # events swapped out above (a state holding a transition whose event is not written
        # would lose that event to a failover).
        writes = self._snapshot(dirty, rows)
        try:
            for write in writes:
                key = (write.network, write.node)
                write.events = [await self._event_write(key, e) for e in events.get(key, [])]
            await self.store.write(writes)
        except Exception as exc:
            self.stats.flushes_failed += 1
            log.warning("node state not written (%d nodes), kept for the next flush: %s", len(dirty), exc)
            self._dirty |= dirty
            for key, positions in rows.items():
                self._dirty_rows.setdefault(key, set()).update(positions)
            for key, pending in events.items():
                self._events[key] = pending + self._events.get(key, [])
            self._due = due + self._due
            return
        for write in writes:
            self._durable[(write.network, write.node)] = write.frontier
        for receipt in due:
            if all(minute <= self._durable.get(key, -1) for key, minute in receipt.taken):
                receipt.deliver(receipt)
            else:  # an older minute of one of its nodes is still in the encoder
                self._due.append(receipt)

    def _snapshot(self, dirty: set[NodeKey], rows: dict[NodeKey, set[int]]) -> list[NodeWrite]:
        windows = self._windows()
        writes = []
        for key in dirty:
            life = self.conditions.get(key)
            slot = windows.slot(key)
            frontier = self.frontier(key, slot)
            positions = self._settled_rows(key, slot, frontier, sorted(rows.get(key, ())))
            ring = windows.ring_rows(slot, positions) if slot is not None else []
            write = NodeWrite(
                key[0], key[1], life.last_minute if life else -1, life.to_dict() if life else {},
                frontier=frontier,
            )  # fmt: skip
            write.rows = [(p * windows.row_bytes, row) for p, row in zip(positions, ring, strict=True)]
            writes.append(write)
        return writes

    def _settled_rows(self, key: NodeKey, slot: int | None, frontier: int, positions: list[int]) -> list[int]:
        """The ring positions whose minute is settled (up to the frontier); the others wait for a
        later flush. A row past the frontier would overwrite, in Redis, the row an hour older that
        the windows of its still unsettled minutes need, so a replica resuming the node could not
        diagnose the minutes its probe resends."""
        if slot is None or not positions:
            return positions
        minutes = self._windows().row_minutes(slot, positions)
        held = [p for p, minute in zip(positions, minutes, strict=True) if minute > frontier]
        if not held:
            return positions
        self._dirty_rows.setdefault(key, set()).update(held)
        return [p for p, minute in zip(positions, minutes, strict=True) if minute <= frontier]

    async def _event_write(self, key: NodeKey, event: _Event) -> EventWrite:
        kind, event_type = _EVENT_TYPES[event.kind]
        incident = await self.incident(key, event)
        message = incident_service_pb2.IncidentEvent(type=event_type, incident=incident, minute=event.minute)
        message.event_time.FromNanoseconds(event.time_ns)
        return EventWrite(
            kind,
            incident.incident_id,
            incident.SerializeToString(),
            message.SerializeToString(),
            incident.label,
        )

    async def incident(self, key: NodeKey, event: _Event) -> incident_service_pb2.Incident:
        """The Incident message of an event, with its explanation."""
        t = event.transition
        open_ = t.incident
        names = event.state.runner.metadata.feature_names
        incident = incident_service_pb2.Incident(
            incident_id=f"{key[0]}/{key[1]}/{open_.incident_id}", network=key[0], node=key[1],
            label=open_.label,
            verdict=diagnosis_pb2.VERDICT_UNKNOWN if open_.label == UNKNOWN else diagnosis_pb2.VERDICT_FAULT,
            severity=self._severity(open_.label), model_version=open_.model_version, distance=open_.distance,
            reference_case_id=open_.case_id, supporting_minutes=open_.supporting_minutes,
        )  # fmt: skip
        incident.start_time.FromSeconds(open_.start_minute * 60)
        if t.kind == "abated":
            incident.end_time.FromSeconds(t.end_minute * 60)
        if open_.margin is not None:
            incident.margin = open_.margin
        incident.explanation.from_normal.extend(
            departures(zip(open_.signature, open_.departures, strict=True), names)
        )
        incident.explanation.families.extend(families(list(incident.explanation.from_normal)))
        if not open_.reference and event.departure is not None and open_.label != UNKNOWN:
            profile = await self.profiles.profile(event.state, key[0], open_.case_id)
            if profile is not None:
                gap = event.departure - profile
                open_.reference = [[c, float(gap[c])] for c in largest(gap, SHOWN)]
        incident.explanation.from_reference.extend(departures(open_.reference, names))
        return incident

    def _severity(self, label: str) -> incident_service_pb2.Severity:
        if label in self.severities:
            return self.severities[label]
        return (
            incident_service_pb2.SEVERITY_MINOR if label == UNKNOWN else incident_service_pb2.SEVERITY_MAJOR
        )

    def _expire_idle(self) -> None:
        now = time.monotonic()
        if self.windows is None or now - self._last_expiry < min(60.0, self.options.node_idle_expiry_s):
            return
        self._last_expiry = now
        for key in self.windows.idle(self.options.node_idle_expiry_s, now):
            if key in self._dirty or key in self._events:
                continue
            self.windows.remove(key)
            self.conditions.pop(key, None)
            self.stats.expired_nodes += 1

    def _windows(self) -> NodeWindows:
        if self.windows is None:
            meta = self.encoder.host.require().runner.metadata
            self.windows = NodeWindows(meta.steps, meta.features)
        return self.windows

    async def close(self) -> None:
        """Lets the running flush finish, then writes what is still pending. Windows still in the
        backlog go undiagnosed: their requests are never acknowledged, and their senders resend
        them to another replica."""
        self._closing = True
        if self._feeder is not None:
            self._feeder.cancel()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def _problem(minute: probe_service_pb2.NodeMinute, expected_bytes: int) -> str:
    """Why a minute cannot be taken, or ""."""
    if not is_valid_id(minute.network) or not is_valid_id(minute.node):
        return f"network {minute.network!r} or node {minute.node!r} is not a valid id"
    if len(minute.packed_values) != expected_bytes:
        return (
            f"packed_values holds {len(minute.packed_values)} bytes; the model reads {expected_bytes // 4} "
            f"statistics as float32, {expected_bytes} bytes"
        )
    if minute.minute <= 0:
        return f"minute {minute.minute} is not a minute after 1970-01-01T00:00Z"
    return ""


def _needs_departure(life: NodeLifeCycle, diagnosis: MinuteDiagnosis) -> bool:
    """Departures cost a normalisation: only for a node raised, or with a fault in sight."""
    return (
        life.incident is not None or diagnosis.label != NORMAL or any(d.label != NORMAL for d in life.recent)
    )
