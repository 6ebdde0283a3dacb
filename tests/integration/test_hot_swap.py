"""A model swap under concurrent load, through real gRPC: nothing fails and nothing mixes versions.

Every probe sends exactly the window enrolled as the network's reference case, so a
window embedded by one version and matched against references embedded by the other
would show a non-zero distance. The batch function is tapped to record the versions
inside each batch.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import grpc
import pytest

from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import publish_artifact
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-swap"
PROBES = 8


async def test_a_swap_under_load_fails_no_request_and_never_mixes_versions(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, windows
) -> None:
    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    v1 = publish_artifact(sync_redis, layout, artifact_factory(seed=41)).version
    server, target = await start_server(model_source="redis")
    batch_versions: list[set[str]] = []
    batch_sizes: list[int] = []
    run_batch = server.scheduler._run_batch

    async def tapped(batch):  # type: ignore[no-untyped-def]
        run = await run_batch(batch)
        batch_versions.append({e.state.version for e in run.results})
        batch_sizes.append(len(run.results))
        return run

    server.scheduler._run_batch = tapped
    reference = windows("normal", 1, seed=9)[0]
    old_runner = weakref.ref(server.host.current.runner)
    answers: list[list[tuple[str, float]]] = [[] for _ in range(PROBES)]
    failures: list[grpc.aio.AioRpcError] = []
    stop = asyncio.Event()

    async def probe(client: AsyncFaultprintClient, i: int) -> None:
        while not stop.is_set():
            try:
                d = await client.classify(NET, f"pcscf-{i}", reference)
                answers[i].append((d.model_version, d.distance))
            except grpc.aio.AioRpcError as exc:
                failures.append(exc)

    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [reference])
        load = [asyncio.create_task(probe(client, i)) for i in range(PROBES)]
        await asyncio.sleep(1.0)
        v2 = publish_artifact(sync_redis, layout, artifact_factory(seed=42)).version
        await eventually(lambda: server.host.current.version == v2, timeout_s=30)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*load)

    assert not failures, failures[:3]
    flat = [a for per_probe in answers for a in per_probe]
    assert {v for v, _ in flat} == {v1, v2}
    assert max(d for _, d in flat) < 1e-4  # matched against references embedded by the same version
    for per_probe in answers:  # once a probe is answered by v2, it is never answered by v1 again
        versions = [v for v, _ in per_probe]
        assert versions == sorted(versions, key=[v1, v2].index)
    assert all(len(v) == 1 for v in batch_versions)
    assert max(batch_sizes) > 1  # batches held several requests, so a mix was possible
    assert len(sync_redis.hkeys(layout.embeddings(v2, NET))) == 1  # the reference re-embedded by v2
    gc.collect()
    assert old_runner() is None  # the old version's model is released
    sync_redis.close()


async def test_a_new_version_of_the_same_shape_warms_only_the_graphs_the_serving_one_chose(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, monkeypatch
) -> None:
    """A swap warms under load at what the serving threads leave over: where the new version
    has the serving one's shape, only the graph chosen per size is compiled and timed. A new
    shape is timed on both graphs again."""
    import faultprint.server.model.host as serving_state
    from faultprint.server.model.runner import time_graphs

    asked: list[tuple[int, bool | None]] = []

    def spied(runners: Any, size: int, only: bool | None = None, helpers: Any = ()) -> dict[bool, float]:
        asked.append((size, only))
        return time_graphs(runners, size, only, helpers)

    monkeypatch.setattr(serving_state, "time_graphs", spied)
    server, _ = await start_server(
        model_source=str(artifact_factory(seed=51)), xla="auto", max_batch_size=4, cpu_devices=2
    )
    chosen = server.host.current.runner.graph_choices()
    assert sorted(chosen) == [1, 2, 4] and {only for _, only in asked} == {None}

    asked.clear()
    await server.host.load(artifact_factory(seed=52))
    assert sorted(asked) == sorted(chosen.items())  # only the chosen graph, once per size
    assert all(runner.graph_choices() == chosen for runner in server.host.current.runners)

    asked.clear()
    await server.host.load(artifact_factory(seed=53, lstm_units=16))
    assert {only for _, only in asked} == {None}
