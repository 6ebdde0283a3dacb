"""The dynamic batch scheduler: merges single windows from many probes into encoder batches.

Two layers, neither importing TensorFlow:
- BatchPolicy decides, from the queue, the devices' state and a clock reading alone,
  which requests form the next batch, on which device, and when to look again, so
  every rule can be tested on a fake clock.
- BatchScheduler drives the policy on the asyncio loop: ``await submit(window)``
  returns that window's result, and a failed batch fails every request in it.

Rules:
- A batch goes to a device with a free slot when the queue holds a full batch, or
  when the oldest request has waited max_queue_delay_ms, or at once when the device
  is idle and the load is light (recent batches were single requests), so a lone
  request never waits. Under heavy load an idle device waits while requests keep
  arriving (until a short pause, a full batch or the max delay): a closed loop of
  probes then keeps sending whole batches instead of alternating one lone request
  with everyone else. Batches are spread over devices, least busy first and the
  lowest-numbered among equals (light load keeps to one device, whose weights stay
  cached), and padded up to an allowed size.
- With more than one batch in flight per device, the next batch for a busy device is
  formed just before the device is expected to free up (by the running estimate),
  so it holds every request that arrived meanwhile and is assembled while the
  current batch computes.
- The queue is bounded and fair across nodes (round-robin between per-node queues).
- Requests whose deadline has passed, or that cannot finish before it by the running
  estimate of queue wait plus batch time, or whose caller has gone, never take a
  batch slot: they are refused at admission or dropped at dispatch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from faultprint.server.batching.cost import BatchCostModel
from faultprint.server.rpc.errors import DeadlineExceeded, FaultprintError, ResourceExhausted

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Estimates are stretched by this factor (plus _ESTIMATE_SLACK_S) before a request is
# judged able to make its deadline: a batch that runs a little slower than its moving
# average must still answer in time.
_ESTIMATE_SLACK = 1.25
_ESTIMATE_SLACK_S = 0.010
# Weight of the newest batch in the moving average of batch sizes that tells light load
# (single requests: an idle device answers a lone request at once) from heavy load
# (an idle device lets a batch fill, up to max_queue_delay_ms).
_LOAD_SMOOTHING = 0.3
# How long before a busy device frees up its next batch is formed: time to assemble it.
_ASSEMBLY_LEAD_S = 0.002
_LIGHT_LOAD_MEAN_BATCH = 1.5
# Under heavy load an idle device waits for a fuller batch while requests keep arriving. By
# default it goes once none has arrived for this share of a full batch's estimated compute
# time, and never waits less than _MIN_ARRIVAL_GAP_S: a pause that is long beside a 4 ms
# batch is short beside a 60 ms one. At 2 ms, the original encoder's two devices at C = 64
# split the probes into three groups of about 21 instead of two of 32; 6-15 ms served 5-9 %
# more (benchmarks/archive/2026-12-06.md).
_ARRIVAL_GAP_SHARE = 0.1
_MIN_ARRIVAL_GAP_S = 0.002


@dataclass(frozen=True)
class BatchSchedulerOptions:
    """Limits of the batch scheduler."""

    # Largest number of requests in one encoder call.
    max_batch_size: int = 64
    # Longest the oldest request waits for a batch to fill while every device is busy, in ms.
    max_queue_delay_ms: float = 5.0
    # Requests waiting before new ones are rejected with RESOURCE_EXHAUSTED.
    max_queue_size: int = 2048
    # Sizes batches are padded up to, ascending, ending at max_batch_size, so the encoder
    # meets only shapes it was warmed for. Empty means powers of two up to max_batch_size.
    allowed_batch_sizes: tuple[int, ...] = ()
    # Batches handed to one device at once: 2 lets the next batch be assembled and
    # copied while the current one computes.
    batches_in_flight: int = 1
    # Time kept free at the end of each request's deadline for its answer to reach the
    # caller (serialising, transport, the caller's own wake-up), in ms: admission and
    # dispatch plan for every batch to finish this long before its requests' deadlines.
    answer_margin_ms: float = 20.0
    # Under heavy load an idle device takes the queue once no request has arrived for this
    # long, in ms (or sooner, with a full batch or at max_queue_delay_ms). None (auto): a
    # tenth of a full batch's estimated compute time, at least 2 ms.
    arrival_gap_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {self.max_queue_delay_ms}")
        if self.max_queue_size < self.max_batch_size:
            raise ValueError(
                f"max_queue_size ({self.max_queue_size}) must be at least "
                f"max_batch_size ({self.max_batch_size})"
            )
        if self.batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be at least 1, got {self.batches_in_flight}")
        if self.answer_margin_ms < 0:
            raise ValueError(f"answer_margin_ms must be >= 0, got {self.answer_margin_ms}")
        if self.arrival_gap_ms is not None and self.arrival_gap_ms < 0:
            raise ValueError(f"arrival_gap_ms must be >= 0 (or None: automatic), got {self.arrival_gap_ms}")
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != self.max_batch_size):
            raise ValueError(
                f"allowed_batch_sizes {sizes} must be strictly ascending, positive, and end at "
                f"max_batch_size ({self.max_batch_size})"
            )

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The sizes a batch may be padded to."""
        if self.allowed_batch_sizes:
            return self.allowed_batch_sizes
        powers = [1 << i for i in range(self.max_batch_size.bit_length()) if 1 << i < self.max_batch_size]
        return (*powers, self.max_batch_size)

    def padded_size(self, count: int) -> int:
        """The smallest allowed batch size that holds count requests."""
        for size in self.batch_sizes:
            if size >= count:
                return size
        raise ValueError(f"{count} requests exceed max_batch_size {self.max_batch_size}")


@dataclass(eq=False)
class QueuedRequest(Generic[T]):
    """One request waiting for a batch; it owns the future its caller awaits."""

    payload: T
    future: asyncio.Future[Any]
    # Requests with the same key (a node) share a queue; keys are served round-robin.
    key: Hashable
    # Loop time when queued and when the caller stops waiting (None: no deadline).
    enqueued_at: float
    deadline: float | None = None


@dataclass
class Decision(Generic[T]):
    """What the policy decided at one clock reading."""

    batch: list[QueuedRequest[T]] = field(default_factory=list)
    # The device the batch goes to and the size it is padded to.
    device: int = 0
    padded_size: int = 0
    expired: list[QueuedRequest[T]] = field(default_factory=list)
    # When to look again if nothing else happens (None: only when woken).
    wake_at: float | None = None


@dataclass(frozen=True)
class Rejection:
    """Why a request was refused at admission: a metric label and the error its caller gets."""

    reason: str
    error: FaultprintError


class BatchPolicy(Generic[T]):
    """The queue, device and batching rules, as a pure function of their state and the time."""

    def __init__(self, options: BatchSchedulerOptions, devices: int = 1) -> None:
        if devices < 1:
            raise ValueError(f"the scheduler needs at least one device, got {devices}")
        self.options = options
        self.cost = BatchCostModel(options.batch_sizes)
        self._queues: dict[Hashable, deque[QueuedRequest[T]]] = {}
        self._turns: deque[Hashable] = deque()
        self._size = 0
        self._in_flight = [0] * devices
        # Loop time each device is expected to finish the batches it holds, and the estimated
        # seconds of each of those batches, oldest first (a device runs its batches in order).
        self._busy_until = [0.0] * devices
        self._held: list[deque[float]] = [deque() for _ in range(devices)]
        # Moving average of dispatched batch sizes: near 1 under light load.
        self.mean_batch_size = 1.0
        self._last_arrival = float("-inf")
        self._margin_s = options.answer_margin_ms / 1000
        self._arrival_gap_s = None if options.arrival_gap_ms is None else options.arrival_gap_ms / 1000

    def __len__(self) -> int:
        return self._size

    @property
    def devices(self) -> int:
        return len(self._in_flight)

    def in_flight(self, device: int) -> int:
        return self._in_flight[device]

    def check_admission(self, key: Hashable, deadline: float | None, now: float) -> Rejection | None:
        """Why a new request must be refused now, or None to queue it."""
        if self._size >= self.options.max_queue_size:
            return Rejection(
                "queue_full",
                ResourceExhausted(
                    f"batch queue is full ({self.options.max_queue_size} requests waiting); "
                    "retry with backoff",
                    reason="QUEUE_FULL",
                ),
            )
        if deadline is None or not self.cost.known:
            return None
        left_ms = (deadline - now) * 1000
        # The batch must end answer_margin_ms before the deadline, for the answer to travel.
        answer_by = deadline - self._margin_s
        alone_ms = self._stretch(self.cost.seconds(self.options.padded_size(1))) * 1000
        if (answer_by - now) * 1000 < alone_ms:
            return Rejection(
                "deadline_too_short",
                DeadlineExceeded(
                    f"deadline leaves {left_ms:.1f} ms, less than one encoder batch takes "
                    f"(about {alone_ms:.1f} ms) plus {self.options.answer_margin_ms:g} ms to deliver "
                    "its answer; give the call a longer deadline",
                    reason="DEADLINE_TOO_SHORT",
                ),
            )
        finish = self.estimated_finish(key, now)
        if answer_by < finish:
            return Rejection(
                "overloaded",
                ResourceExhausted(
                    f"server is overloaded: a new request would finish in about {(finish - now) * 1000:.0f} "
                    f"ms, too close to its deadline ({left_ms:.0f} ms); retry with backoff or on another "
                    "replica"
                ),
            )
        return None

    def estimated_finish(self, key: Hashable, now: float) -> float:
        """When a request of this key queued now would be answered, by the running estimate.

        Round-robin serves at most (own queue + 1) requests of each other node first.
        """
        own = len(self._queues.get(key, ()))
        ahead = min(self._size, len(self._turns) * (own + 1))
        full_batches, rest = divmod(ahead, self.options.max_batch_size)
        device_busy = max(0.0, min(self._busy_until) - now)
        per_device = full_batches // self.devices
        full = self.cost.seconds(self.options.max_batch_size)
        own_batch = self.cost.seconds(self.options.padded_size(rest + 1))
        return now + self._stretch(device_busy + per_device * full + own_batch)

    @staticmethod
    def _stretch(seconds: float) -> float:
        return seconds * _ESTIMATE_SLACK + _ESTIMATE_SLACK_S

    def admit(self, request: QueuedRequest[T]) -> None:
        """Queues a request (check_admission has accepted it)."""
        queue = self._queues.get(request.key)
        if queue is None:
            queue = self._queues[request.key] = deque()
            self._turns.append(request.key)
        queue.append(request)
        self._size += 1
        self._last_arrival = max(self._last_arrival, request.enqueued_at)

    def oldest_enqueued_at(self) -> float | None:
        return min((q[0].enqueued_at for q in self._queues.values()), default=None)

    def _free_device(self) -> int | None:
        """The least busy device with a free slot, the lowest-numbered among equals, or None.

        Not round-robin: under light load every batch then goes to the same device, whose
        replica's weights stay in cache, so a second device costs a lone request nothing.
        With this and the warm-up's graph choice (model.runner.time_graphs), the original
        encoder at C = 1 serves 68 windows/s on two devices as on one, p99 18.4 and 18.2 ms,
        against 57 and 62 windows/s, p99 25.4 and 22.8 ms, with round-robin and a best-of-two
        graph choice (benchmarks/archive/2026-12-06.md). The graph choice makes most of that
        difference; this rule was not timed apart.
        """
        slots = self.options.batches_in_flight
        free = [device for device, load in enumerate(self._in_flight) if load < slots]
        return min(free, key=self._in_flight.__getitem__, default=None)

    def decide(self, now: float) -> Decision[T]:
        """The next batch to run now (possibly empty), requests that expired, and when to look again."""
        decision: Decision[T] = Decision()
        oldest = self.oldest_enqueued_at()
        device = self._free_device()
        if oldest is None or device is None:
            return decision
        due = oldest + self.options.max_queue_delay_ms / 1000.0
        if self._in_flight[device] > 0 and self.cost.known:
            # The device is busy: the next batch need only be ready as it frees up, so it
            # keeps filling until then (just in time), the max delay still bounding the wait.
            due = min(due, self._busy_until[device] - _ASSEMBLY_LEAD_S)
        if self._size < self.options.max_batch_size and not self._idle_and_filled(device, now) and now < due:
            if self._in_flight[device] == 0:
                due = min(due, self._last_arrival + self.arrival_gap_s())
            decision.wake_at = due
            return decision
        start = max(now, self._busy_until[device])
        # A request answered after its deadline is wasted work: drop those that cannot make it
        # (the batch's own compute, stretched, must end answer_margin_ms before the deadline).
        compute = self._stretch(
            self.cost.seconds(self.options.padded_size(min(self._size, self.options.max_batch_size)))
        )
        cutoff = start + compute + self._margin_s if self.cost.known else now
        while self._turns and len(decision.batch) < self.options.max_batch_size:
            request = self._pop_next()
            if request.future.done():
                continue  # the caller cancelled or gave up
            if request.deadline is not None and request.deadline <= cutoff:
                decision.expired.append(request)
                continue
            decision.batch.append(request)
        if decision.batch:
            decision.device = device
            decision.padded_size = self.options.padded_size(len(decision.batch))
            self._in_flight[device] += 1
            estimate = self.cost.seconds(decision.padded_size)
            self._busy_until[device] = start + estimate
            self._held[device].append(estimate)
            self.mean_batch_size += _LOAD_SMOOTHING * (len(decision.batch) - self.mean_batch_size)
        return decision

    def _idle_and_filled(self, device: int, now: float) -> bool:
        """Whether an idle device should take the queue now rather than wait for the max delay.

        Under light load (recent batches were single requests) a lone request never
        waits. Under heavy load the device waits while requests keep arriving, and
        goes once arrivals pause for arrival_gap_ms: a closed loop of probes refills
        its whole batch instead of sending a lone request ahead of everyone else.
        """
        if self._in_flight[device] > 0:
            return False
        light = self.mean_batch_size < _LIGHT_LOAD_MEAN_BATCH
        return light or now >= self._last_arrival + self.arrival_gap_s()

    def arrival_gap_s(self) -> float:
        """How long a pause in arrivals sends an idle device's batch under heavy load."""
        if self._arrival_gap_s is not None:
            return self._arrival_gap_s
        full_batch_s = self.cost.seconds(self.options.max_batch_size)
        return max(_MIN_ARRIVAL_GAP_S, _ARRIVAL_GAP_SHARE * full_batch_s)

    def finish(self, device: int, padded_size: int, compute_s: float | None, now: float) -> None:
        """Frees the device slot a batch held, learns from its compute time, and re-bases the
        device's expected finish on the clock (the batches still held start from now)."""
        self._in_flight[device] -= 1
        held = self._held[device]
        if held:
            held.popleft()
        self._busy_until[device] = now + sum(held)
        if compute_s is not None:
            self.cost.record(padded_size, compute_s)

    def _pop_next(self) -> QueuedRequest[T]:
        key = self._turns.popleft()
        queue = self._queues[key]
        request = queue.popleft()
        self._size -= 1
        if queue:
            self._turns.append(key)
        else:
            del self._queues[key]
        return request

    def drain(self) -> list[QueuedRequest[T]]:
        """Removes and returns every queued request."""
        drained = []
        while self._turns:
            drained.append(self._pop_next())
        return drained


@dataclass(frozen=True)
class Batch(Generic[T]):
    """A batch handed to run_batch: the payloads, the device to run on, the padded size."""

    payloads: list[T]
    device: int
    padded_size: int


@dataclass(frozen=True)
class BatchRun(Generic[R]):
    """What run_batch returns: one result per payload, and the device compute time in seconds."""

    results: Sequence[R]
    compute_s: float | None = None


class SchedulerObserver(Protocol):
    """Receives what the scheduler does, for metrics; every method must be cheap."""

    def rejected(self, reason: str) -> None: ...

    def expired(self, count: int) -> None: ...

    def dispatched(self, size: int, padded_size: int, queue_waits_s: list[float]) -> None: ...

    def late(self, count: int) -> None: ...


class NullObserver:
    def rejected(self, reason: str) -> None:
        pass

    def expired(self, count: int) -> None:
        pass

    def dispatched(self, size: int, padded_size: int, queue_waits_s: list[float]) -> None:
        pass

    def late(self, count: int) -> None:
        pass


class BatchScheduler(Generic[T, R]):
    """Runs BatchPolicy on the event loop; the public surface is ``await submit(payload)``."""

    def __init__(
        self,
        run_batch: Callable[[Batch[T]], Awaitable[BatchRun[R]]],
        options: BatchSchedulerOptions,
        devices: int = 1,
        clock: Callable[[], float] | None = None,
        observer: SchedulerObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.options = options
        self._policy: BatchPolicy[T] = BatchPolicy(options, devices)
        self._clock = clock
        self._observer = observer or NullObserver()
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return len(self._policy)

    @property
    def closed(self) -> bool:
        """Whether the scheduler has stopped taking requests (the server is stopping)."""
        return self._closed

    @property
    def batches_in_flight(self) -> int:
        return sum(self._policy.in_flight(d) for d in range(self._policy.devices))

    def seed_batch_times(self, seconds_by_size: dict[int, float]) -> None:
        """Starts the running estimate from warm-up timings of each padded size."""
        self._policy.cost.seed(seconds_by_size)

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_forever(), name="batch-dispatcher")

    async def submit(self, payload: T, key: Hashable = None, deadline: float | None = None) -> R:
        """Queues one payload and returns its result; deadline is on the loop's clock."""
        return await self.enqueue(payload, key, deadline)

    def enqueue(self, payload: T, key: Hashable = None, deadline: float | None = None) -> asyncio.Future[R]:
        """submit() without the coroutine: the future of the result, for callback-driven callers
        (a stream answers each window from a done-callback instead of a task per window).
        Raises at once when the request is refused; cancelling the future withdraws it."""
        if self._closed:
            self._observer.rejected("shutting_down")
            raise ResourceExhausted(
                "server is shutting down; retry on another replica", reason="SHUTTING_DOWN"
            )
        now = self._now()
        rejection = self._policy.check_admission(key, deadline, now)
        if rejection is not None:
            self._observer.rejected(rejection.reason)
            raise rejection.error
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._policy.admit(QueuedRequest(payload, future, key, now, deadline))
        self._wakeup.set()
        return future

    async def _dispatch_forever(self) -> None:
        while not self._closed:
            now = self._now()
            decision = self._policy.decide(now)
            if decision.expired:
                for request in decision.expired:
                    _fail(request, DeadlineExceeded("deadline passes before a batch could answer it"))
                self._observer.expired(len(decision.expired))
            if decision.batch:
                self._observer.dispatched(
                    len(decision.batch), decision.padded_size, [now - r.enqueued_at for r in decision.batch]
                )
                task = asyncio.create_task(self._run(decision))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
                continue
            if decision.expired:
                continue
            self._wakeup.clear()
            timeout = None if decision.wake_at is None else max(decision.wake_at - self._now(), 0)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    async def _run(self, decision: Decision[T]) -> None:
        batch = decision.batch
        compute_s = None
        try:
            run = await self._run_batch(
                Batch([r.payload for r in batch], decision.device, decision.padded_size)
            )
            compute_s = run.compute_s
            if len(run.results) != len(batch):
                raise RuntimeError(f"encoder returned {len(run.results)} results for a batch of {len(batch)}")
        except Exception as exc:  # every request of a failed batch gets the failure
            log.exception("batch of %d on device %d failed", len(batch), decision.device)
            for request in batch:
                _fail(request, exc)
        else:
            self._resolve(batch, run.results)
        finally:
            self._policy.finish(decision.device, decision.padded_size, compute_s, self._now())
            self._wakeup.set()

    def _resolve(self, batch: list[QueuedRequest[T]], results: Sequence[R]) -> None:
        """Answers each request; one whose deadline passed while its batch ran gets DEADLINE_EXCEEDED.

        Its caller has stopped waiting: a diagnosis delivered now would be an answer
        after the deadline. Such requests mean the admission estimate was wrong, so
        they are counted (observer.late).
        """
        now = self._now()
        late = 0
        for request, result in zip(batch, results, strict=True):
            if request.future.done():
                continue
            if request.deadline is not None and now > request.deadline:
                late += 1
                overrun_ms = (now - request.deadline) * 1000
                request.future.set_exception(
                    DeadlineExceeded(f"the batch finished {overrun_ms:.0f} ms after the deadline")
                )
            else:
                request.future.set_result(result)
        if late:
            self._observer.late(late)

    async def close(self) -> None:
        """Stops taking requests, fails those still queued, and lets running batches finish."""
        self._closed = True
        for request in self._policy.drain():
            _fail(
                request,
                ResourceExhausted(
                    "server is shutting down; retry on another replica", reason="SHUTTING_DOWN"
                ),
            )
        if self._dispatcher:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)


def _fail(request: QueuedRequest[Any], exc: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(exc)
