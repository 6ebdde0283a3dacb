"""A batch is embedded and matched under one model version, even when a swap lands mid-batch."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from server.batch_scheduler import BatchScheduler, BatchSchedulerOptions
from server.servicers import Encoder
from server.telemetry import ServerTelemetry


class FakeRunner:
    """Pure stand-in for the TensorFlow runner: embeds a window as its first value."""

    def __init__(self, version: str, host: SimpleNamespace | None = None, swap_to: object = None) -> None:
        self.version = version
        self.metadata = SimpleNamespace(steps=2, features=3, distance_threshold=1.0)
        self.host, self.swap_to = host, swap_to
        self.shapes: list[tuple[int, ...]] = []

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        if self.host is not None:
            self.host.current = self.swap_to  # a hot swap lands while this batch computes
        return batch[:, 0, :1].copy()


async def test_every_request_of_a_batch_names_the_version_that_computed_it() -> None:
    host = SimpleNamespace(current=None, executor=ThreadPoolExecutor(1))
    new_state = SimpleNamespace(runner=FakeRunner("v2"), version="v2")
    old_runner = FakeRunner("v1", host, new_state)
    old_state = SimpleNamespace(runner=old_runner, version="v1")
    host.current = old_state
    host.require = lambda: host.current
    encoder = Encoder(host, ServerTelemetry.create())  # type: ignore[arg-type]
    encoder.scheduler = BatchScheduler(
        encoder.run_batch, BatchSchedulerOptions(max_batch_size=8, allowed_batch_sizes=(1, 4, 8))
    )
    windows = [np.full((2, 3), i, np.float32) for i in range(3)]
    results = await encoder.run_batch(windows)
    assert [r.state.version for r in results] == ["v1", "v1", "v1"]
    assert [float(r.embedding[0]) for r in results] == [0.0, 1.0, 2.0]
    assert old_runner.shapes == [(4, 2, 3)]  # padded up to the next allowed size
    assert [r.state.version for r in await encoder.run_batch(windows[:1])] == ["v2"]
    host.executor.shutdown()
    await asyncio.sleep(0)
