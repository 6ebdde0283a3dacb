"""Batch scheduler rules on a fake clock, and the asyncio driver's exactly-once answers."""

from __future__ import annotations

import asyncio

import pytest

from faultprint.server.batching.scheduler import (
    Batch,
    BatchPolicy,
    BatchRun,
    BatchScheduler,
    BatchSchedulerOptions,
    QueuedRequest,
)
from faultprint.server.rpc.errors import DeadlineExceeded, ResourceExhausted


class FakeFuture:
    """Stands in for asyncio.Future in the pure policy tests."""

    def __init__(self, done: bool = False) -> None:
        self._done = done

    def done(self) -> bool:
        return self._done


def request(payload: int, at: float, key: object = None, deadline: float | None = None, done: bool = False):
    return QueuedRequest(payload, FakeFuture(done), key, at, deadline)  # type: ignore[arg-type]


def policy(devices: int = 1, **options: object) -> BatchPolicy[int]:
    base = {"max_batch_size": 4, "max_queue_delay_ms": 10.0, "max_queue_size": 8}
    return BatchPolicy(BatchSchedulerOptions(**{**base, **options}), devices)  # type: ignore[arg-type]


def admit(p: BatchPolicy[int], payload: int, at: float, key: object = None, deadline: float | None = None,
          done: bool = False) -> None:  # fmt: skip
    rejection = p.check_admission(key, deadline, at)
    if rejection is not None:
        raise rejection.error
    p.admit(request(payload, at, key, deadline, done))


def payloads(decision) -> list[int]:  # type: ignore[no-untyped-def]
    return [r.payload for r in decision.batch]


def busy(p: BatchPolicy[int], now: float = 0.0, payload: int = -1) -> None:
    """Occupies the next free device slot with a one-request batch."""
    admit(p, payload, now, key=("busy", payload))
    assert payloads(p.decide(now)) == [payload]


def test_idle_device_dispatches_a_lone_request_at_once() -> None:
    p = policy()
    admit(p, 1, at=0.0)
    assert payloads(p.decide(now=0.0)) == [1]


def test_under_heavy_load_an_idle_device_lets_its_batch_fill() -> None:
    p = policy(max_queue_size=64)
    for _ in range(6):  # full batches: the load is heavy
        for i in range(4):
            admit(p, i, at=0.0, key=i)
        assert len(p.decide(now=0.0).batch) == 4
        p.finish(0, 4, None, now=0.0)
    admit(p, 1, at=1.0)
    waiting = p.decide(now=1.0)
    assert waiting.batch == [] and waiting.wake_at == pytest.approx(1.002)  # arrivals may still come
    admit(p, 2, at=1.001, key=2)
    assert p.decide(now=1.0025).batch == []  # still arriving: 1.5 ms since the last one
    # Arrivals paused for 2 ms: the batch goes, well before the 10 ms delay.
    assert payloads(p.decide(now=1.003)) == [1, 2]


def heavy(p: BatchPolicy[int], batch_s: float | None = None) -> None:
    """Six full batches dispatched and finished (each measured at batch_s): the load is heavy."""
    for _ in range(6):
        for i in range(4):
            admit(p, i, at=0.0, key=i)
        assert len(p.decide(now=0.0).batch) == 4
        p.finish(0, 4, batch_s, now=0.0)


def test_a_slow_encoder_waits_through_longer_pauses_in_arrivals() -> None:
    """A 2 ms pause is long beside a 4 ms batch and short beside a 100 ms one: the device
    waits for a tenth of the full batch's estimated time (at least 2 ms)."""
    fast, slow = policy(max_queue_size=64), policy(max_queue_size=64, max_queue_delay_ms=50.0)
    heavy(fast, batch_s=0.004)
    heavy(slow, batch_s=0.100)
    assert fast.arrival_gap_s() == pytest.approx(0.002)
    assert slow.arrival_gap_s() == pytest.approx(0.010)
    for p in (fast, slow):
        admit(p, 1, at=1.0)
        admit(p, 2, at=1.001, key=2)
    assert payloads(fast.decide(now=1.004)) == [1, 2]
    assert slow.decide(now=1.004).batch == [] and slow.decide(now=1.004).wake_at == pytest.approx(1.011)
    admit(slow, 3, at=1.008, key=3)  # arrivals go on: the batch keeps filling
    assert slow.decide(now=1.012).batch == []
    assert payloads(slow.decide(now=1.0185)) == [1, 2, 3]


def test_a_set_arrival_gap_replaces_the_automatic_one() -> None:
    p = policy(max_queue_size=64, arrival_gap_ms=0.5)
    heavy(p, batch_s=0.100)
    assert p.arrival_gap_s() == pytest.approx(0.0005)
    admit(p, 1, at=1.0)
    assert p.decide(now=1.0).batch == []
    assert payloads(p.decide(now=1.0006)) == [1]


def test_when_load_turns_light_lone_requests_go_at_once_again() -> None:
    p = policy(max_queue_size=64)
    p.mean_batch_size = 4.0  # after a busy spell
    singles = 0
    for step in range(20):
        now = float(step)
        admit(p, step, at=now)
        decision = p.decide(now=now)
        if decision.batch:
            singles += 1
        else:
            assert payloads(p.decide(now=now + 0.010)) == [step]  # waited at most the max delay
        p.finish(0, 1, None, now=0.0)
    assert singles > 10 and p.mean_batch_size < 1.5


def test_busy_device_holds_a_partial_batch_until_the_max_delay() -> None:
    p = policy(batches_in_flight=2)
    busy(p)
    admit(p, 1, at=0.0)
    waiting = p.decide(now=0.005)
    assert waiting.batch == [] and waiting.wake_at == pytest.approx(0.010)
    assert payloads(p.decide(now=0.010)) == [1]


def test_full_batch_goes_without_waiting_and_is_capped_at_max_batch_size() -> None:
    p = policy(batches_in_flight=2)
    busy(p)
    for i in range(6):
        admit(p, i, at=0.0)
    assert payloads(p.decide(now=0.0)) == [0, 1, 2, 3]
    assert len(p) == 2


def test_no_batch_while_every_device_slot_is_busy_and_a_finished_batch_frees_its_slot() -> None:
    p = policy()
    busy(p)
    for i in range(4):
        admit(p, i, at=0.0)
    decision = p.decide(now=1.0)
    assert decision.batch == [] and decision.wake_at is None
    p.finish(device=0, padded_size=1, compute_s=0.01, now=1.0)
    assert payloads(p.decide(now=1.0)) == [0, 1, 2, 3]


def test_queue_bound_rejects_at_once() -> None:
    p = policy()
    for i in range(8):
        admit(p, i, at=0.0)
    with pytest.raises(ResourceExhausted, match="queue is full"):
        admit(p, 9, at=0.0)
    assert p.check_admission(None, None, 0.0).reason == "queue_full"  # type: ignore[union-attr]


def test_expired_requests_never_take_a_batch_slot() -> None:
    p = policy()
    admit(p, 1, at=0.0, deadline=0.5)
    admit(p, 2, at=0.0, deadline=5.0)
    decision = p.decide(now=1.0)
    assert payloads(decision) == [2]
    assert [r.payload for r in decision.expired] == [1]


def test_cancelled_requests_are_skipped() -> None:
    p = policy()
    admit(p, 1, at=0.0, done=True)
    admit(p, 2, at=0.0)
    assert payloads(p.decide(now=0.0)) == [2]


def test_round_robin_across_nodes_so_a_flood_does_not_starve_others() -> None:
    p = policy(max_queue_size=16)
    for i in range(8):
        admit(p, 100 + i, at=0.0, key="flooding-node")
    admit(p, 1, at=0.1, key="quiet-a")
    admit(p, 2, at=0.2, key="quiet-b")
    first = payloads(p.decide(now=0.2))
    assert first == [100, 1, 2, 101]


def test_padding_to_allowed_batch_sizes() -> None:
    options = BatchSchedulerOptions(max_batch_size=64, allowed_batch_sizes=(1, 8, 64))
    assert [options.padded_size(n) for n in (1, 2, 8, 9, 64)] == [1, 8, 8, 64, 64]
    assert BatchSchedulerOptions(max_batch_size=48).batch_sizes == (1, 2, 4, 8, 16, 32, 48)
    with pytest.raises(ValueError):
        options.padded_size(65)
    p = policy(max_batch_size=8, allowed_batch_sizes=(1, 4, 8), max_queue_size=16)
    busy(p)
    p.finish(0, 1, None, now=0.0)
    for i in range(3):
        admit(p, i, at=0.0)
    assert p.decide(now=0.0).padded_size == 4


def test_batches_spread_over_devices_least_busy_first() -> None:
    p = policy(devices=3, batches_in_flight=2, max_queue_size=32)
    placed = []
    for i in range(3):  # each idle device takes a lone request at once
        admit(p, i, at=0.0)
        placed.append(p.decide(now=0.0).device)
    for i in range(3):  # then full batches fill the second slots in turn
        for j in range(4):
            admit(p, 10 * i + j, at=0.0, key=j)
        placed.append(p.decide(now=0.0).device)
    assert placed == [0, 1, 2, 0, 1, 2]
    assert [p.in_flight(d) for d in range(3)] == [2, 2, 2]
    p.finish(device=1, padded_size=1, compute_s=None, now=0.0)
    p.finish(device=1, padded_size=4, compute_s=None, now=0.0)
    for j in range(4):
        admit(p, 90 + j, at=0.0, key=j)
    assert p.decide(now=0.0).device == 1


def test_under_light_load_every_batch_goes_to_the_same_device() -> None:
    # One request at a time: the first device takes each, so its replica stays in cache.
    p = policy(devices=2)
    placed = []
    for i in range(4):
        admit(p, i, at=float(i))
        decision = p.decide(now=float(i))
        placed.append(decision.device)
        p.finish(device=decision.device, padded_size=1, compute_s=0.01, now=i + 0.01)
    assert placed == [0, 0, 0, 0]


def test_an_idle_device_takes_a_request_while_another_device_is_busy() -> None:
    p = policy(devices=2)
    busy(p)
    admit(p, 1, at=0.0)
    decision = p.decide(now=0.0)
    assert payloads(decision) == [1] and decision.device == 1


def seeded(**options: object) -> BatchPolicy[int]:
    """A policy that has measured a batch of 1 taking 10 ms and a batch of 4 taking 20 ms."""
    p = policy(**{"max_queue_size": 64, **options})  # type: ignore[arg-type]
    p.cost.record(1, 0.010)
    p.cost.record(4, 0.020)
    return p


def test_a_deadline_shorter_than_one_batch_is_refused_with_deadline_exceeded() -> None:
    p = seeded()
    with pytest.raises(DeadlineExceeded, match="give the call a longer deadline"):
        admit(p, 1, at=0.0, deadline=0.005)
    assert p.check_admission("n", 0.005, 0.0).reason == "deadline_too_short"  # type: ignore[union-attr]
    admit(p, 2, at=0.0, deadline=0.050)  # room for one batch: accepted


def test_admission_refuses_what_the_queue_ahead_would_make_late() -> None:
    p = seeded()
    busy(p)  # the device is busy until 10 ms
    for i in range(16):
        admit(p, i, at=0.0, key=f"node-{i}")
    # 16 queued = 4 full batches of 20 ms after the running one: about 10 + 80 + 10 ms.
    finish = p.estimated_finish("new-node", now=0.0)
    assert 0.095 < finish < 0.150
    rejection = p.check_admission("new-node", 0.060, 0.0)
    assert rejection is not None and rejection.reason == "overloaded"
    assert isinstance(rejection.error, ResourceExhausted)
    assert p.check_admission("new-node", 0.500, 0.0) is None
    assert p.check_admission("new-node", None, 0.0) is None  # no deadline: only the queue bound applies


def test_round_robin_counts_in_the_estimate_for_a_quiet_node() -> None:
    p = seeded()
    for i in range(16):
        admit(p, i, at=0.0, key="flooding-node")
    # Round-robin serves a quiet node's first request in the next batch, not after the flood.
    assert p.estimated_finish("quiet-node", now=0.0) < 0.05 < p.estimated_finish("flooding-node", now=0.0)


def test_more_devices_shorten_the_estimate() -> None:
    one, two = seeded(), seeded(devices=2)
    for p in (one, two):
        for i in range(16):
            admit(p, i, at=0.0, key=f"node-{i}")
    assert two.estimated_finish("x", 0.0) < one.estimated_finish("x", 0.0)


def test_a_request_that_would_finish_late_is_dropped_at_dispatch_not_computed() -> None:
    p = seeded(batches_in_flight=2)
    busy(p)  # busy until 10 ms
    admit(p, 1, at=0.0, deadline=0.060)
    admit(p, 2, at=0.0, deadline=1.0)
    # At 15 ms the batch would start at best now and take about 13 ms (27 ms with the
    # estimate's margin), and its answers need the 20 ms answer margin: request 1 cannot
    # be answered by 60 ms.
    decision = p.decide(now=0.015)
    assert payloads(decision) == [2]
    assert [r.payload for r in decision.expired] == [1]


def test_the_answer_margin_is_kept_free_at_admission_and_at_dispatch() -> None:
    """A batch that would end inside the last answer_margin_ms of a deadline is not planned."""
    for margin_ms, admitted in ((0.0, True), (20.0, False)):
        p = seeded(answer_margin_ms=margin_ms)
        # One batch of 1 takes 22.5 ms by the stretched estimate.
        assert (p.check_admission("n", 0.040, 0.0) is None) is admitted
    p = seeded(answer_margin_ms=0.0, batches_in_flight=2)
    busy(p)
    admit(p, 1, at=0.0, deadline=0.060)
    assert payloads(p.decide(now=0.015)) == [1]  # the same request as above, with no margin


def test_the_estimate_learns_from_measured_batches() -> None:
    p = seeded()
    before = p.cost.seconds(4)
    for _ in range(40):
        p.cost.record(4, 0.040)
    assert before == pytest.approx(0.020) and p.cost.seconds(4) == pytest.approx(0.040, rel=0.05)
    for i in range(40):  # jittery batches: the estimate covers the slow ones, not just the mean
        p.cost.record(4, 0.030 if i % 2 else 0.050)
    assert 0.050 <= p.cost.seconds(4) < 0.075
    assert p.cost.seconds(2) == p.cost.seconds(4)  # unmeasured: the next larger size's cost
    assert p.cost.seconds(8) == pytest.approx(2 * p.cost.seconds(4))  # beyond: scaled up


def test_a_warm_up_seed_is_taken_with_a_margin_until_live_batches_are_measured() -> None:
    p = policy()
    p.cost.seed({4: 0.020})
    assert p.cost.seconds(4) == pytest.approx(0.030)  # warm-up time plus twice a 25 % deviation
    for _ in range(40):
        p.cost.record(4, 0.020)
    assert p.cost.seconds(4) == pytest.approx(0.020, rel=0.05)


def test_without_any_measurement_admission_only_applies_the_queue_bound() -> None:
    p = policy()
    assert p.check_admission("n", 0.000001, 0.0) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue_delay_ms": -1}, "max_queue_delay_ms"),
        ({"max_batch_size": 64, "max_queue_size": 8}, "max_queue_size"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)}, "ascending"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (1, 4)}, "end at max_batch_size"),
        ({"batches_in_flight": 0}, "batches_in_flight"),
        ({"arrival_gap_ms": -1.0}, "arrival_gap_ms"),
    ],
)
def test_options_say_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchSchedulerOptions(**options)  # type: ignore[arg-type]


async def test_concurrent_submissions_share_batches_and_each_gets_its_own_result() -> None:
    sizes: list[int] = []
    release = asyncio.Event()

    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        items = batch.payloads
        sizes.append(len(items))
        await release.wait()
        return BatchRun([x * 10 for x in items])

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
    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        raise RuntimeError("encoder crashed")

    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, BatchSchedulerOptions(max_batch_size=4))
    scheduler.start()
    results = await asyncio.gather(*(scheduler.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    # The scheduler still serves after a failure.
    scheduler._run_batch = lambda batch: asyncio.sleep(0, result=BatchRun(batch.payloads))  # type: ignore[assignment]
    assert await scheduler.submit(7) == 7
    await scheduler.close()


async def test_wrong_number_of_results_fails_the_batch() -> None:
    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        items = batch.payloads
        return BatchRun(items[:-1])

    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, BatchSchedulerOptions(max_batch_size=4))
    scheduler.start()
    with pytest.raises(RuntimeError, match="returned 0 results for a batch of 1"):
        await scheduler.submit(1)
    await scheduler.close()


async def test_deadline_passed_in_queue_is_answered_deadline_exceeded() -> None:
    release = asyncio.Event()

    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        items = batch.payloads
        await release.wait()
        return BatchRun(items)

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

    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        items = batch.payloads
        await release.wait()
        return BatchRun(items)

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


class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def rejected(self, reason: str) -> None:
        self.events.append(("rejected", reason))

    def expired(self, count: int) -> None:
        self.events.append(("expired", count))

    def dispatched(self, size: int, padded_size: int, queue_waits_s: list[float]) -> None:
        self.events.append(("dispatched", (size, padded_size, len(queue_waits_s))))

    def late(self, count: int) -> None:
        self.events.append(("late", count))


async def test_a_request_whose_batch_finishes_after_its_deadline_gets_deadline_exceeded() -> None:
    """Admission let it in (no estimate yet), but the batch ran past its deadline: no late answer."""

    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        await asyncio.sleep(0.05)
        return BatchRun(batch.payloads, compute_s=0.05)

    observer = RecordingObserver()
    options = BatchSchedulerOptions(max_batch_size=4, allowed_batch_sizes=(1, 2, 4))
    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, options, observer=observer)
    scheduler.start()
    loop = asyncio.get_running_loop()
    in_time = asyncio.create_task(scheduler.submit(1, deadline=loop.time() + 5.0))
    overrun = asyncio.create_task(scheduler.submit(2, deadline=loop.time() + 0.02))
    assert await in_time == 1
    with pytest.raises(DeadlineExceeded, match="ms after the deadline"):
        await overrun
    await scheduler.close()
    assert ("late", 1) in observer.events


async def test_observer_sees_dispatches_rejections_and_expiries() -> None:
    release = asyncio.Event()

    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        await release.wait()
        return BatchRun(batch.payloads, compute_s=0.01)

    observer = RecordingObserver()
    options = BatchSchedulerOptions(max_batch_size=4, max_queue_size=4, allowed_batch_sizes=(1, 4))
    scheduler: BatchScheduler[int, int] = BatchScheduler(run_batch, options, observer=observer)
    scheduler.start()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(scheduler.submit(0))
    await asyncio.sleep(0.01)
    queued = [asyncio.create_task(scheduler.submit(i)) for i in range(1, 4)]
    late = asyncio.create_task(scheduler.submit(9, deadline=loop.time() + 0.005))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted):
        await scheduler.submit(5)
    await asyncio.sleep(0.01)
    release.set()
    assert await first == 0 and await asyncio.gather(*queued) == [1, 2, 3]
    with pytest.raises(DeadlineExceeded):
        await late
    await scheduler.close()
    assert ("dispatched", (1, 1, 1)) in observer.events
    assert ("dispatched", (3, 4, 3)) in observer.events
    assert ("rejected", "queue_full") in observer.events
    assert ("expired", 1) in observer.events


async def test_batches_run_on_every_device_at_once() -> None:
    running: dict[int, int] = {}
    peak: list[int] = []
    release = asyncio.Event()

    async def run_batch(batch: Batch[int]) -> BatchRun[int]:
        running[batch.device] = running.get(batch.device, 0) + 1
        peak.append(sum(running.values()))
        await release.wait()
        running[batch.device] -= 1
        return BatchRun(batch.payloads)

    scheduler: BatchScheduler[int, int] = BatchScheduler(
        run_batch, BatchSchedulerOptions(max_batch_size=2, max_queue_delay_ms=0), devices=2
    )
    scheduler.start()
    calls = [asyncio.create_task(scheduler.submit(i, key=i)) for i in range(6)]
    await asyncio.sleep(0.02)
    assert max(peak) == 2 and set(running) == {0, 1}
    release.set()
    assert await asyncio.gather(*calls) == list(range(6))
    await scheduler.close()


def test_the_next_batch_forms_just_before_a_busy_device_frees_up() -> None:
    p = seeded(batches_in_flight=2, max_queue_delay_ms=100.0)
    busy(p)  # a batch of 1: about 10 ms, so the device frees up at 0.010
    admit(p, 1, at=0.001)
    waiting = p.decide(now=0.001)
    assert waiting.batch == [] and waiting.wake_at == pytest.approx(0.008)  # not the 100 ms cap
    admit(p, 2, at=0.005, key="other")
    assert payloads(p.decide(now=0.008)) == [1, 2]


def test_a_device_that_finishes_early_is_expected_free_from_then_on() -> None:
    p = seeded(batches_in_flight=2)
    for i in range(4):
        admit(p, i, at=0.0, key=i)
    assert len(p.decide(now=0.0).batch) == 4  # estimated to run until 0.020
    p.finish(0, 4, compute_s=0.005, now=0.005)  # it took 5 ms
    # The estimate for a new request starts from the idle device now, not from 0.020.
    assert p.estimated_finish("n", now=0.005) < 0.005 + 0.03
