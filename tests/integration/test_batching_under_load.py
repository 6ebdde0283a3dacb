"""The batcher through real gRPC: several devices share the load, and deadlines and overload are honoured."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from faultprint.client import AsyncFaultprintClient, StreamItem
from faultprint.server.settings import ServerSettings

pytestmark = pytest.mark.integration


class BatchSpy:
    """Counts the batches each device's model replica computes (wraps the real runners)."""

    def __init__(self, server: Any) -> None:
        self.batches: Counter[str] = Counter()
        for runner in server.host.current.runners:
            runner.embed = self._counting(runner.device, runner.embed)

    def _counting(self, device: str, embed: Callable[[Any], np.ndarray]) -> Callable[[Any], np.ndarray]:
        def counted(batch: Any) -> np.ndarray:
            self.batches[device] += 1
            return embed(batch)

        return counted


async def test_two_devices_are_prepared_side_by_side_timed_as_they_serve_run_one_graph_and_share_the_batches(  # type: ignore[no-untyped-def]
    start_server, artifact, windows, monkeypatch
) -> None:
    import faultprint.server.model.host as serving_state
    from faultprint.server.model.runner import ModelRunner, time_graphs

    prepared_on: dict[str, set[str]] = {}
    timed: dict[int, list[tuple[str, str]]] = {}
    real_prepare, real_graph_call = ModelRunner.prepare, ModelRunner.graph_call

    def prepare(runner: ModelRunner, size: int, only: bool | None = None) -> None:
        prepared_on.setdefault(runner.device, set()).add(threading.current_thread().name)
        real_prepare(runner, size, only)

    def graph_call(runner: ModelRunner, size: int, xla: bool) -> Callable[[], None]:
        call = real_graph_call(runner, size, xla)

        def spied() -> None:
            timed.setdefault(size, []).append((runner.device, threading.current_thread().name))
            call()

        return spied

    def plain_looks_slow(*args: Any) -> dict[bool, float]:
        """The plain graph looks 50 times slower: every device must then run XLA."""
        return {xla: t if xla else t * 50 for xla, t in time_graphs(*args).items()}

    monkeypatch.setattr(ModelRunner, "prepare", prepare)
    monkeypatch.setattr(ModelRunner, "graph_call", graph_call)
    monkeypatch.setattr(serving_state, "time_graphs", plain_looks_slow)
    server, target = await start_server(
        model_source=str(artifact), devices="cpu", cpu_devices=2, xla="auto", max_batch_size=8
    )
    devices = server.host.devices
    assert len(devices) == 2
    # Each device's replica was traced on a loader thread of its own.
    threads = [prepared_on[device] for device in devices]
    assert all(len(names) == 1 for names in threads) and threads[0] != threads[1], prepared_on
    loader_of = {device: names.pop() for device, names in zip(devices, threads, strict=True)}
    # A lone request was timed on the first device alone; larger batches on both devices,
    # each on its own loader thread; and both devices run the graph found faster.
    sizes = (1, 2, 4, 8)
    assert set(timed) == set(sizes)
    assert {call[0] for call in timed[1]} == {devices[0]}
    for size in sizes[1:]:
        assert set(timed[size]) == set(loader_of.items()), (size, timed[size])
    assert [runner.compiled_sizes for runner in server.host.current.runners] == [sizes, sizes]
    spy = BatchSpy(server)
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-d", "normal", [windows("normal", 1)[0]])
        probes = windows("normal", 8, seed=3)
        for _ in range(5):
            answers = await asyncio.gather(
                *(client.classify("net-d", f"pcscf-{i}", probes[i % 8]) for i in range(48))
            )
            assert all(a.label == "normal" for a in answers)
    assert set(spy.batches) == set(server.host.devices), spy.batches


@pytest.fixture(scope="module")
def slow_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original LSTM width: a batch of 8 takes tens of ms on two cores, so queues build."""
    from tests.conftest import make_artifact

    return make_artifact(tmp_path_factory.mktemp("slow"), seed=5, lstm_units=512)


async def timed_classify(
    client: AsyncFaultprintClient, window: np.ndarray, node: str, timeout_s: float | None
):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    try:
        await client.classify("net-o", node, window, timeout_s=timeout_s)
        return "OK", "", time.perf_counter() - started
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or "", time.perf_counter() - started


async def test_deadlines_and_overload_are_answered_early_never_late(
    start_server, slow_artifact, windows
) -> None:  # type: ignore[no-untyped-def]
    _, target = await start_server(
        model_source=str(slow_artifact), max_batch_size=8, max_queue_size=24, max_queue_delay_ms=2
    )
    window = windows("normal", 1)[0]
    # This test process holds many models that no server froze (freeze_gc is off in tests),
    # so a full garbage collection could stall the loop that client and server share for
    # longer than a deadline here; a server in its own process freezes them instead.
    gc.disable()
    try:
        await _deadlines_and_overload(target, window)
    finally:
        gc.enable()


async def _deadlines_and_overload(target: str, window: np.ndarray) -> None:
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-o", "normal", [window])

        # A deadline shorter than one batch is refused at once, not computed: the server's own
        # admission message arrives, not the client's timeout. The answer's time is the deadline
        # at most, plus how late this loop (shared by client and server) resumes the caller.
        code, details, elapsed = await timed_classify(client, window, "pcscf-0", timeout_s=0.012)
        assert code == "DEADLINE_EXCEEDED" and "longer deadline" in details, details
        assert elapsed < 0.012 + 0.010

        # A flood past the queue bound: the excess gets RESOURCE_EXHAUSTED at once.
        flood = await asyncio.gather(*(timed_classify(client, window, f"n{i}", None) for i in range(64)))
        codes = Counter(code for code, _, _ in flood)
        assert codes["OK"] >= 8 and codes["RESOURCE_EXHAUSTED"] > 0, codes
        assert all("queue is full" in d for c, d, _ in flood if c == "RESOURCE_EXHAUSTED")

        # Overload with deadlines: every request either answers within its deadline or is refused
        # early; none is computed past its deadline. The deadline is three batch times beyond the
        # time the server keeps free for each answer's trip back (its answer margin), so the
        # first batch fits and 64 requests (eight batches) cannot all make it, however fast this
        # machine is today.
        started = time.perf_counter()
        await asyncio.gather(*(timed_classify(client, window, f"b{i}", None) for i in range(8)))
        deadline_s = 3 * (time.perf_counter() - started) + ServerSettings().batching.answer_margin_ms / 1000
        burst = await asyncio.gather(
            *(timed_classify(client, window, f"n{i}", deadline_s) for i in range(64))
        )
        codes = Counter(code for code, _, _ in burst)
        assert codes["OK"] > 0 and codes["OK"] < 64, codes
        late = [(c, d, t) for c, d, t in burst if c == "DEADLINE_EXCEEDED" and d == "Deadline Exceeded"]
        assert late == []
        assert all(t < deadline_s for c, _, t in burst if c == "OK")
        refused = [d for c, d, _ in burst if c != "OK"]
        reasons = ("overloaded", "queue is full", "deadline passes", "longer deadline")
        assert all(any(reason in d for reason in reasons) for d in refused), refused

        # And the server still serves.
        assert (await timed_classify(client, window, "after", 5.0))[0] == "OK"


async def test_a_server_that_owns_its_process_freezes_the_loaded_model_out_of_the_collector(  # type: ignore[no-untyped-def]
    start_server, artifact
) -> None:
    await start_server(model_source=str(artifact), freeze_gc=True)
    try:
        for _ in range(100):
            if gc.get_freeze_count() > 0:
                break
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # give this test process its collector back


async def test_a_streamed_window_with_its_own_timeout_is_refused_early_and_the_stream_goes_on(
    start_server, slow_artifact, windows
) -> None:  # type: ignore[no-untyped-def]
    from faultprint.client import StreamItem

    _, target = await start_server(model_source=str(slow_artifact), max_batch_size=8)
    window = windows("normal", 1)[0]
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-s", "normal", [window])
        stream = client.open_stream()
        try:
            # Shorter than one batch: refused at once. Negative: invalid. None: the stream's own.
            for sequence, timeout_s in ((1, 0.001), (2, -1.0), (3, None), (4, 30.0)):
                await stream.send(StreamItem("net-s", "pcscf-1", window, sequence, timeout_s=timeout_s))
            answers = {a.sequence: a for a in [await stream.receive() for _ in range(4)]}
            await stream.close()
        finally:
            stream.cancel()
    assert answers[1].error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], answers[1]
    assert "longer deadline" in answers[1].error.message
    assert answers[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], answers[2]
    assert answers[3].diagnosis.label == "normal" and answers[4].diagnosis.label == "normal"


async def test_a_throttled_probe_backs_off_while_the_server_sheds(  # type: ignore[no-untyped-def]
    start_server, slow_artifact, windows
) -> None:
    from faultprint.client import ThrottleOptions
    from faultprint.client.throttle import THROTTLED_DETAILS

    _, target = await start_server(
        model_source=str(slow_artifact), max_batch_size=8, max_queue_size=8, max_queue_delay_ms=2
    )
    window = windows("normal", 1)[0]
    async with AsyncFaultprintClient(target, throttle=ThrottleOptions(ratio=1.5, window_s=5.0)) as client:
        await client.create_reference_case("net-o", "normal", [window])
        # Waves of 64 against a queue of 8: the server refuses most, then the client itself does.
        details: Counter[str] = Counter()
        for _ in range(6):
            results = await asyncio.gather(
                *(timed_classify(client, window, f"n{i}", None) for i in range(64)), return_exceptions=False
            )
            details.update("throttled" if d == THROTTLED_DETAILS else c for c, d, _ in results)
        assert details["RESOURCE_EXHAUSTED"] > 0 and details["OK"] > 0, details
        assert details["throttled"] > 0 and client.throttle is not None and client.throttle.refused > 0
        assert sum(details.values()) == 6 * 64  # every call answered: by the server or the client
        # A stream refuses locally too, answering the window with RESOURCE_EXHAUSTED itself.
        stream = client.open_stream()
        answers = []
        for i in range(64):
            await stream.send(StreamItem("net-o", f"s{i}", window, sequence=i))
        for _ in range(64):
            answers.append(await stream.receive())
        await stream.close()
        assert sorted(a.sequence for a in answers) == list(range(64))
        assert any(a.error.message == THROTTLED_DETAILS for a in answers)
