"""Several replicas on one Redis, the model registry, health and reflection, and Redis outages."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import promote, publish_artifact, store_artifact
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-b"


async def test_reflection_lists_the_services_and_health_says_serving(start_server, artifact) -> None:  # type: ignore[no-untyped-def]
    _, target = await start_server(model_source=str(artifact))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():  # type: ignore[no-untyped-def]
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services = set()
        async for reply in stub.ServerReflectionInfo(ask()):
            services |= {s.name for s in reply.list_services_response.service}
        assert {"faultprint.v1.ProbeService", "faultprint.v1.ReferenceCaseService",
                "faultprint.v1.ModelService", "grpc.health.v1.Health"} <= services  # fmt: skip
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "faultprint.v1.ProbeService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_two_replicas_on_one_redis_see_each_others_cases(start_server, artifact, windows) -> None:  # type: ignore[no-untyped-def]
    _, target_a = await start_server(model_source=str(artifact))
    _, target_b = await start_server(model_source=str(artifact))
    async with AsyncFaultprintClient(target_a) as a, AsyncFaultprintClient(target_b) as b:
        case = await a.create_reference_case(NET, "hss_unreachable", [windows("hss_unreachable", 1)[0]])
        probe = windows("hss_unreachable", 1, seed=5)[0]

        async def b_knows() -> bool:
            return (await b.classify(NET, "pcscf-1", probe)).label == "hss_unreachable"

        await eventually(b_knows)
        await b.delete_reference_case(NET, case.reference_case_id)

        async def a_forgot() -> bool:
            try:
                await a.classify(NET, "pcscf-1", probe)
            except grpc.aio.AioRpcError as exc:
                return exc.code() == grpc.StatusCode.NOT_FOUND
            return False

        await eventually(a_forgot)


async def test_a_published_model_is_picked_up_and_references_are_re_embedded(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, windows
) -> None:
    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    first, second = artifact_factory(seed=11), artifact_factory(seed=12)
    v1 = publish_artifact(sync_redis, layout, first).version
    server_a, target_a = await start_server(model_source="redis")
    server_b, target_b = await start_server(model_source="redis")
    assert server_a.host.current.version == v1 == server_b.host.current.version
    async with AsyncFaultprintClient(target_a) as a, AsyncFaultprintClient(target_b) as b:
        await a.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
        v2 = publish_artifact(sync_redis, layout, second).version
        await eventually(lambda: server_a.host.current.version == v2 and server_b.host.current.version == v2)
        for client in (a, b):
            diagnosis = await client.classify(NET, "pcscf-1", windows("normal", 1, seed=3)[0])
            assert diagnosis.model_version == v2
        stored = sync_redis.hkeys(layout.embeddings(v2, NET))
        assert len(stored) == 1  # the case was re-embedded under v2

        # A corrupt artifact is rejected; the serving model stays, and the registry rolls back.
        v3 = store_artifact(sync_redis, layout, artifact_factory(seed=13)).version
        blob = sync_redis.get(layout.model_artifact(v3))
        sync_redis.set(layout.model_artifact(v3), blob[: len(blob) // 2])
        promote(sync_redis, layout, v3)
        await eventually(lambda: sync_redis.get(layout.serving_version) == v2.encode())
        assert sync_redis.hget(layout.model_meta(v3), "state") == b"rejected"
        assert b"digest mismatch" in sync_redis.hget(layout.model_meta(v3), "reason")
        assert server_a.host.current.version == v2 == server_b.host.current.version
        assert (await a.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v2

        # So is one whose input spec differs from the serving model's.
        narrow = publish_artifact(sync_redis, layout, artifact_factory(seed=14, features=100)).version
        await eventually(lambda: sync_redis.hget(layout.model_meta(narrow), "state") == b"rejected")
        assert sync_redis.get(layout.serving_version) == v2.encode()
        assert server_b.host.current.version == v2
    sync_redis.close()


async def test_a_part_that_will_not_stop_does_not_hold_up_shutdown(  # type: ignore[no-untyped-def]
    redis_url, redis_prefix, artifact, tmp_path, monkeypatch, caplog
) -> None:
    from faultprint.server import app
    from faultprint.server.settings import ServerSettings

    monkeypatch.setattr(app, "_PART_STOP_S", 0.2)
    settings = ServerSettings.of(listen_address="127.0.0.1:0", redis_url=redis_url, redis_prefix=redis_prefix,
                              model_source=str(artifact), model_cache_dir=str(tmp_path), freeze_gc=False)  # fmt: skip
    server, _ = await app.create_server(settings)
    await server.wait_ready()
    real_close = server.shadow.close

    async def stuck() -> None:
        await asyncio.Event().wait()

    server.shadow.close = stuck
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 5.0
    assert "the shadow did not stop in 0 s" in caplog.text
    await real_close()
