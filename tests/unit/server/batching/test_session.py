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
        self.metadata = SimpleNamespace(steps=2, features=3, distance_threshold=1.0, network_baseline=False)
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


def test_a_batch_is_read_against_each_windows_network_baseline_in_place() -> None:
    import numpy as np

    from faultprint.server.batching.session import EncodeRequest, read_against_baselines
    from faultprint.traffic.baseline import NetworkBaseline

    rng = np.random.default_rng(0)
    small = NetworkBaseline.fit(rng.poisson(10, (4, 60, 3)).astype(np.float32))
    large = NetworkBaseline.fit(rng.poisson(10_000, (4, 60, 3)).astype(np.float32))
    index = SimpleNamespace(baselines={"small": (small, "s"), "large": (large, "l")})
    runner = SimpleNamespace(metadata=SimpleNamespace(network_baseline=True))
    state = SimpleNamespace(runner=runner, index=index)
    windows = rng.poisson(10, (3, 60, 3)).astype(np.float32)
    batch = np.concatenate([windows, np.full((1, 60, 3), 7.0, np.float32)])  # a padding row
    requests = [EncodeRequest(windows[0], "small"), EncodeRequest(windows[1], "large"),
                EncodeRequest(windows[2], "unknown")]  # fmt: skip
    out = read_against_baselines(state, batch, requests)  # type: ignore[arg-type]
    assert out is batch
    assert np.allclose(batch[0], small.normalise(windows[0]), atol=1e-5)
    assert np.allclose(batch[1], large.normalise(windows[1]), atol=1e-5)
    assert np.allclose(batch[2], np.log1p(windows[2]), atol=1e-5), "no baseline: centre 0, scale 1"
    assert (batch[3] == 7.0).all(), "padding is left alone"
    plain = SimpleNamespace(runner=SimpleNamespace(metadata=SimpleNamespace(network_baseline=False)))
    raw = windows.copy()
    assert read_against_baselines(plain, raw, requests) is raw and np.array_equal(raw, windows)  # type: ignore[arg-type]


def test_a_window_embedded_only_is_read_against_its_network_but_not_matched() -> None:
    import numpy as np

    from faultprint.server.batching.session import EncodeRequest, match_batch

    matched: list[int] = []
    index = SimpleNamespace(match_many=lambda e, ks, t: [matched.append(len(e)) or "m" for _ in ks])
    runner = SimpleNamespace(metadata=SimpleNamespace(distance_threshold=1.0))
    state = SimpleNamespace(runner=runner, index=SimpleNamespace(get=lambda network: index))
    window = np.zeros((2, 3), np.float32)
    requests = [EncodeRequest(window, "net"), EncodeRequest(window, "net", match=False)]
    assert match_batch(state, np.zeros((2, 4)), requests, 3) == ["m", None]  # type: ignore[arg-type]
    assert matched == [1]
