"""Batch scheduler rules on a fake clock, and the asyncio driver's exactly-once answers."""

from __future__ import annotations

import asyncio

import pytest

from server.batch_scheduler import BatchPolicy, BatchScheduler, BatchSchedulerOptions, QueuedRequest
from server.errors import DeadlineExceeded, ResourceExhausted


class FakeFuture:
    """Stands in for asyncio.Future in the pure policy tests."""

    def __init__(self, done: bool = False) -> None:
        self._done = done

    def done(self) -> bool:
        return self._done


def request(payload: int, at: float, key: object = None, deadline: float | None = None, done: bool = False):
    return QueuedRequest(payload, FakeFuture(done), key, at, deadline)  # type: ignore[arg-type]


def policy(**options: object) -> BatchPolicy[int]:
    base = {"max_batch_size": 4, "max_queue_delay_ms": 10.0, "max_queue_size": 8}
    return BatchPolicy(BatchSchedulerOptions(**{**base, **options}))  # type: ignore[arg-type]


def payloads(decision) -> list[int]:  # type: ignore[no-untyped-def]
    return [r.payload for r in decision.batch]


def test_idle_device_dispatches_a_lone_request_at_once() -> None:
    p = policy()
    p.admit(request(1, at=0.0))
    assert payloads(p.decide(now=0.0, in_flight=0)) == [1]


def test_busy_device_holds_a_partial_batch_until_the_max_delay() -> None:
    p = policy(batches_in_flight=2)
    p.admit(request(1, at=0.0))
    waiting = p.decide(now=0.005, in_flight=1)
    assert waiting.batch == [] and waiting.wake_at == pytest.approx(0.010)
    assert payloads(p.decide(now=0.010, in_flight=1)) == [1]


def test_full_batch_goes_without_waiting_and_is_capped_at_max_batch_size() -> None:
    p = policy(batches_in_flight=2)
    for i in range(6):
        p.admit(request(i, at=0.0))
    assert payloads(p.decide(now=0.0, in_flight=1)) == [0, 1, 2, 3]
    assert len(p) == 2


def test_no_batch_while_every_device_slot_is_busy() -> None:
    p = policy()
    for i in range(4):
        p.admit(request(i, at=0.0))
    decision = p.decide(now=1.0, in_flight=1)
    assert decision.batch == [] and decision.wake_at is None


def test_queue_bound_rejects_at_once() -> None:
    p = policy()
    for i in range(8):
        p.admit(request(i, at=0.0))
    with pytest.raises(ResourceExhausted, match="queue is full"):
        p.admit(request(9, at=0.0))


def test_expired_requests_never_take_a_batch_slot() -> None:
    p = policy()
    p.admit(request(1, at=0.0, deadline=0.5))
    p.admit(request(2, at=0.0, deadline=5.0))
    decision = p.decide(now=1.0, in_flight=0)
    assert payloads(decision) == [2]
    assert [r.payload for r in decision.expired] == [1]


def test_cancelled_requests_are_skipped() -> None:
    p = policy()
    p.admit(request(1, at=0.0, done=True))
    p.admit(request(2, at=0.0))
    assert payloads(p.decide(now=0.0, in_flight=0)) == [2]


def test_round_robin_across_nodes_so_a_flood_does_not_starve_others() -> None:
    p = policy(max_queue_size=16)
    for i in range(8):
        p.admit(request(100 + i, at=0.0, key="flooding-node"))
    p.admit(request(1, at=0.1, key="quiet-a"))
    p.admit(request(2, at=0.2, key="quiet-b"))
    first = payloads(p.decide(now=0.2, in_flight=0))
    assert set(first) >= {1, 2}
    assert first == [100, 1, 2, 101]


def test_padding_to_allowed_batch_sizes() -> None:
    options = BatchSchedulerOptions(max_batch_size=64, allowed_batch_sizes=(1, 8, 64))
    assert [options.padded_size(n) for n in (1, 2, 8, 9, 64)] == [1, 8, 8, 64, 64]
    assert BatchSchedulerOptions(max_batch_size=48).batch_sizes == (1, 2, 4, 8, 16, 32, 48)
    with pytest.raises(ValueError):
        options.padded_size(65)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue_delay_ms": -1}, "max_queue_delay_ms"),
        ({"max_batch_size": 64, "max_queue_size": 8}, "max_queue_size"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)}, "ascending"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (1, 4)}, "end at max_batch_size"),
        ({"batches_in_flight": 0}, "batches_in_flight"),
    ],
)
def test_options_say_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchSchedulerOptions(**options)  # type: ignore[arg-type]


async def test_concurrent_submissions_share_batches_and_each_gets_its_own_result() -> None:
    sizes: list[int] = []
    release = asyncio.Event()

    async def run_batch(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await release.wait()
        return [x * 10 for x in items]

    scheduler: BatchScheduler[int, int] = BatchScheduler(
        run_batch, BatchSchedulerOptions(max_batch_size=8, max_queue_delay_ms=1000)
    )
    scheduler.start()
    first = asyncio.create_task(scheduler.submit(0))
    await asyncio.sleep(0.01)  # the lone request is dispatched at once and blocks the device
    rest = [asyncio.create_task(scheduler.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [10, 20, 30, 40, 50]
    assert sizes == [1, 5]
    await scheduler.close()


async def test_a_failed_batch_fails_every_request_in_it_exactly_once() -> None:
    async def run_batch(items: list[int]) -> list[int]:
        raise RuntimeError("encoder crashed")

    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, BatchSchedulerOptions(max_batch_size=4))
    scheduler.start()
    results = await asyncio.gather(*(scheduler.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    # The scheduler still serves after a failure.
    scheduler._run_batch = lambda items: asyncio.sleep(0, result=list(items))  # type: ignore[assignment]
    assert await scheduler.submit(7) == 7
    await scheduler.close()


async def test_wrong_number_of_results_fails_the_batch() -> None:
    async def run_batch(items: list[int]) -> list[int]:
        return items[:-1]

    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, BatchSchedulerOptions(max_batch_size=4))
    scheduler.start()
    with pytest.raises(RuntimeError, match="returned 0 results for a batch of 1"):
        await scheduler.submit(1)
    await scheduler.close()


async def test_deadline_passed_in_queue_is_answered_deadline_exceeded() -> None:
    release = asyncio.Event()

    async def run_batch(items: list[int]) -> list[int]:
        await release.wait()
        return items

    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, BatchSchedulerOptions(max_batch_size=4))
    scheduler.start()
    blocker = asyncio.create_task(scheduler.submit(0))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    late = asyncio.create_task(scheduler.submit(1, deadline=loop.time() + 0.01))
    await asyncio.sleep(0.05)
    release.set()
    assert await blocker == 0
    with pytest.raises(DeadlineExceeded):
        await late
    await scheduler.close()


async def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    release = asyncio.Event()

    async def run_batch(items: list[int]) -> list[int]:
        await release.wait()
        return items

    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, BatchSchedulerOptions(max_batch_size=1))
    scheduler.start()
    running = asyncio.create_task(scheduler.submit(0))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(scheduler.submit(1))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(scheduler.close())
    await asyncio.sleep(0.01)
    release.set()
    await closing
    assert await running == 0
    with pytest.raises(ResourceExhausted, match="shutting down"):
        await queued
    with pytest.raises(ResourceExhausted):
        await scheduler.submit(2)
