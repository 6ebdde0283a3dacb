"""A batch is embedded and matched under one model version, even when a swap lands mid-batch."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from faultprint.server.batching.scheduler import Batch, BatchSchedulerOptions
from faultprint.server.batching.session import Encoder, EncodeRequest
from faultprint.server.telemetry import ServerTelemetry


class FakeRunner:
    """Pure stand-in for the TensorFlow runner: embeds a window as its first value."""

    def __init__(self, version: str, host: SimpleNamespace | None = None, swap_to: object = None) -> None:
        self.version = version
        self.metadata = SimpleNamespace(steps=2, features=3, distance_threshold=1.0)
        self.host, self.swap_to = host, swap_to
        self.shapes: list[tuple[int, ...]] = []
        self.device = "/CPU:0"
        self.stages_inputs = False

    def embed(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        if self.host is not None:
            self.host.current = self.swap_to  # a hot swap lands while this batch computes
        return batch[:, 0, :1].copy()


async def test_every_request_of_a_batch_names_the_version_that_computed_it() -> None:
    host = SimpleNamespace(current=None, executors=[ThreadPoolExecutor(1)], devices=("/CPU:0",))
    new_runner = FakeRunner("v2")
    new_state = SimpleNamespace(runners=(new_runner,), runner=new_runner, version="v2", index={})
    old_runner = FakeRunner("v1", host, new_state)
    old_state = SimpleNamespace(runners=(old_runner,), runner=old_runner, version="v1", index={})
    host.current = old_state
    host.require = lambda: host.current
    encoder = Encoder(host, ServerTelemetry.create(), BatchSchedulerOptions(max_batch_size=8))  # type: ignore[arg-type]
    windows = [EncodeRequest(np.full((2, 3), i, np.float32)) for i in range(3)]
    run = await encoder.run_batch(Batch(windows, device=0, padded_size=4))
    assert [r.state.version for r in run.results] == ["v1", "v1", "v1"]
    assert [float(r.embedding[0]) for r in run.results] == [0.0, 1.0, 2.0]
    assert old_runner.shapes == [(4, 2, 3)]  # padded up to the size the scheduler chose
    assert run.compute_s is not None and run.compute_s >= 0
    later = await encoder.run_batch(Batch(windows[:1], device=0, padded_size=1))
    assert [r.state.version for r in later.results] == ["v2"]
    host.executors[0].shutdown()
    await asyncio.sleep(0)
