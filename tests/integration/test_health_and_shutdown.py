"""The health service as Kubernetes probes and gRPC clients use it: Watch calls that come and
go, Check that always answers, and SIGTERM that drains (NOT_SERVING) and then stops."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.launcher import ServerProcess

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _check(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    return int(reply.status)


async def test_check_answers_after_many_watch_calls_come_and_go(start_server, artifact) -> None:  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(artifact))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(3):  # rounds of watchers cancelled, as reconnecting clients leave them
            watches = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(10)]
            for watch in watches:
                assert (await watch.read()).status == SERVING
                watch.cancel()
        held = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(20)]
        for watch in held:
            assert (await watch.read()).status == SERVING
        assert await _check(channel) == SERVING
        started = time.monotonic()
        await asyncio.wait_for(server.stop(), 20)  # open watches do not hold the stop
        assert time.monotonic() - started < 10
        for watch in held:
            watch.cancel()


async def test_a_stopping_server_reports_not_serving_while_it_drains(start_server, artifact, windows) -> None:  # type: ignore[no-untyped-def]
    from faultprint.client.client import AsyncFaultprintClient

    server, target = await start_server(model_source=str(artifact))
    async with grpc.aio.insecure_channel(target) as channel, AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-d", "normal", [windows("normal", 1)[0]])
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="faultprint.v1.ProbeService")
        )
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(server.stop(drain_s=1.5))
        assert (await watch.read()).status == NOT_SERVING  # watchers hear it at once
        for service in ("", "faultprint.v1.ReferenceCaseService"):
            assert await _check(channel, service) == NOT_SERVING
        # Still answering during the drain, so calls in flight at a load balancer succeed.
        assert (await client.classify("net-d", "n", windows("normal", 1, seed=2)[0])).label == "normal"
        assert not stopping.done()
        await asyncio.wait_for(stopping, 20)


def test_sigterm_drains_then_stops_with_watches_open(artifact: Path, redis_url: str, redis_prefix: str,
                                                     tmp_path: Path) -> None:  # fmt: skip
    """A real server process: 20 Watch calls open, SIGTERM, NOT_SERVING during the drain, then exit 0."""
    env = {**os.environ, "REDIS_URL": redis_url, "FAULTPRINT_REDIS_PREFIX": redis_prefix}
    flags = {"model-source": artifact, "xla": "off", "max-batch-size": 4, "allowed-batch-sizes": "1,4",
             "shutdown-drain-s": 2, "shutdown-grace-s": 1}  # fmt: skip
    with (tmp_path / "server.log").open("w") as log, ServerProcess(flags, env, log) as server:
        assert server.process is not None

        async def scenario() -> list[int]:
            async with grpc.aio.insecure_channel(server.target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                watches = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(20)]
                for watch in watches:
                    assert (await watch.read()).status == SERVING
                assert server.process is not None
                server.process.send_signal(signal.SIGTERM)
                statuses = [(await watch.read()).status for watch in watches]
                statuses.append(await _check(channel))
                return statuses

        statuses = asyncio.run(scenario())
        assert set(statuses) == {NOT_SERVING}
        started = time.monotonic()
        assert server.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
    assert "draining: NOT_SERVING for 2.0 s" in (tmp_path / "server.log").read_text()
