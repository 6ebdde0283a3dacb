"""The dynamic batch scheduler: merges single windows from many probes into encoder batches.

Two layers, neither importing TensorFlow:
- BatchPolicy decides, from the queue and a clock reading alone, which requests form
  the next batch and when to look again, so every rule can be tested on a fake clock.
- BatchScheduler drives the policy on the asyncio loop: ``await submit(window)``
  returns that window's result, and a failed batch fails every request in it.

Rules: a batch goes out when the device has a free slot and either the queue holds a
full batch, or no batch is running (a lone request on an idle device never waits),
or the oldest request has waited max_queue_delay_ms. The queue is bounded, fair
across nodes (round-robin between per-node queues), and drops requests whose
deadline has passed or whose caller has gone before they take a batch slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from server.errors import DeadlineExceeded, ResourceExhausted

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchSchedulerOptions:
    """Limits of the batch scheduler."""

    # Largest number of requests in one encoder call.
    max_batch_size: int = 64
    # Longest the oldest request waits for a batch to fill while the device is busy, in ms.
    max_queue_delay_ms: float = 5.0
    # Requests waiting before new ones are rejected with RESOURCE_EXHAUSTED.
    max_queue_size: int = 2048
    # Sizes batches are padded up to, ascending, ending at max_batch_size, so the encoder
    # meets only shapes it was warmed for. Empty means powers of two up to max_batch_size.
    allowed_batch_sizes: tuple[int, ...] = ()
    # Batches computing or being assembled at once (2 overlaps assembly with compute).
    batches_in_flight: int = 1

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
    expired: list[QueuedRequest[T]] = field(default_factory=list)
    # When to look again if nothing else happens (None: only when woken).
    wake_at: float | None = None


class BatchPolicy(Generic[T]):
    """The queue and batching rules, as a pure function of the queue and the time."""

    def __init__(self, options: BatchSchedulerOptions) -> None:
        self.options = options
        self._queues: dict[Hashable, deque[QueuedRequest[T]]] = {}
        self._turns: deque[Hashable] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def admit(self, request: QueuedRequest[T]) -> None:
        """Queues a request, or raises ResourceExhausted when the queue is full."""
        if self._size >= self.options.max_queue_size:
            raise ResourceExhausted(
                f"batch queue is full ({self.options.max_queue_size} requests waiting); retry with backoff"
            )
        queue = self._queues.get(request.key)
        if queue is None:
            queue = self._queues[request.key] = deque()
            self._turns.append(request.key)
        queue.append(request)
        self._size += 1

    def oldest_enqueued_at(self) -> float | None:
        return min((q[0].enqueued_at for q in self._queues.values()), default=None)

    def decide(self, now: float, in_flight: int) -> Decision[T]:
        """The next batch to run now (possibly empty), requests that expired, and when to look again."""
        decision: Decision[T] = Decision()
        oldest = self.oldest_enqueued_at()
        if oldest is None or in_flight >= self.options.batches_in_flight:
            return decision
        due = oldest + self.options.max_queue_delay_ms / 1000.0
        if self._size < self.options.max_batch_size and in_flight > 0 and now < due:
            decision.wake_at = due
            return decision
        while self._turns and len(decision.batch) < self.options.max_batch_size:
            request = self._pop_next()
            if request.future.done():
                continue  # the caller cancelled or gave up
            if request.deadline is not None and request.deadline <= now:
                decision.expired.append(request)
                continue
            decision.batch.append(request)
        return decision

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


BatchObserver = Callable[[str, int], None]


class BatchScheduler(Generic[T, R]):
    """Runs BatchPolicy on the event loop; the public surface is ``await submit(payload)``."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[Sequence[R]]],
        options: BatchSchedulerOptions,
        clock: Callable[[], float] | None = None,
        on_event: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.options = options
        self._policy: BatchPolicy[T] = BatchPolicy(options)
        self._clock = clock
        self._on_event = on_event or (lambda reason, count: None)
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return len(self._policy)

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_forever(), name="batch-dispatcher")

    async def submit(self, payload: T, key: Hashable = None, deadline: float | None = None) -> R:
        """Queues one payload and returns its result; deadline is on the loop's clock."""
        if self._closed:
            raise ResourceExhausted("server is shutting down; retry on another replica")
        loop = asyncio.get_running_loop()
        request = QueuedRequest(payload, loop.create_future(), key, self._now(), deadline)
        try:
            self._policy.admit(request)
        except ResourceExhausted:
            self._on_event("rejected_queue_full", 1)
            raise
        self._wakeup.set()
        return await request.future

    async def _dispatch_forever(self) -> None:
        while not self._closed:
            decision = self._policy.decide(self._now(), self._in_flight)
            for request in decision.expired:
                _fail(request, DeadlineExceeded("deadline passed while queued for a batch"))
            if decision.expired:
                self._on_event("expired", len(decision.expired))
            if decision.batch:
                self._in_flight += 1
                task = asyncio.create_task(self._run(decision.batch))
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

    async def _run(self, batch: list[QueuedRequest[T]]) -> None:
        try:
            results = await self._run_batch([r.payload for r in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"encoder returned {len(results)} results for a batch of {len(batch)}")
        except Exception as exc:  # every request of a failed batch gets the failure
            log.exception("batch of %d failed", len(batch))
            for request in batch:
                _fail(request, exc)
        else:
            for request, result in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result(result)
        finally:
            self._in_flight -= 1
            self._wakeup.set()

    async def close(self) -> None:
        """Stops taking requests, fails those still queued, and lets running batches finish."""
        self._closed = True
        for request in self._policy.drain():
            _fail(request, ResourceExhausted("server is shutting down; retry on another replica"))
        if self._dispatcher:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)


def _fail(request: QueuedRequest[Any], exc: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(exc)
