"""A Redis that goes down, comes back empty, or comes back from its AOF file: no replica forgets
what it serves, writes wait for the store, and an export restores a lost store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.launcher import ROOT
from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.layout import RedisLayout
from faultprint.server.references.backup import BackupError, import_cases
from faultprint.server.references.store import ReferenceStore
from faultprint.v1 import reference_case_service_pb2
from tests.integration.support import PrivateRedis, eventually, needs_redis_server

pytestmark = [pytest.mark.integration, needs_redis_server]

NET = "net-s"
REFERENCES = "faultprint.v1.ReferenceCaseService"


async def _health(target: str, service: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def _references_are(target: str, status: int) -> bool:
    return await _health(target, REFERENCES) == status


async def _listed(client: AsyncFaultprintClient) -> list[str]:
    page = await client.references.ListReferenceCases(
        reference_case_service_pb2.ListReferenceCasesRequest(network=NET)
    )
    return [c.reference_case_id for c in page.reference_cases]


async def _operator(action: str, path: Path, url: str, prefix: str) -> int:
    """`faultprint-trainer cases ACTION FILE`, as an operator runs it."""
    from faultprint.trainer.__main__ import main

    argv = ["cases", action, str(path), "--redis-url", url, "--redis-prefix", prefix]
    return await asyncio.to_thread(main, argv)


@contextlib.asynccontextmanager
async def _store(url: str, prefix: str) -> AsyncIterator[ReferenceStore]:
    """The store as an operator's command reaches it: its own connection, closed after."""
    client = aioredis.from_url(url)
    try:
        yield ReferenceStore(client, RedisLayout(prefix), origin="operator")
    finally:
        await client.aclose()


async def test_an_empty_redis_never_makes_a_replica_forget_and_an_export_restores_it(  # type: ignore[no-untyped-def]
    start_server, artifact, windows, tmp_path: Path, redis_prefix, caplog, capsys
) -> None:
    caplog.set_level(logging.WARNING)
    private = PrivateRedis(tmp_path / "redis", aof=False)
    (tmp_path / "redis").mkdir()
    await private.start()
    try:
        server, target = await start_server(model_source=str(artifact), redis_url=private.url)
        normal, hss = windows("normal", 1, seed=1)[0], windows("hss_unreachable", 1, seed=2)[0]
        backup = tmp_path / "cases.parquet"
        async with AsyncFaultprintClient(target) as client:
            await client.create_reference_case(NET, "normal", [normal], case_id="n1")
            await client.create_reference_case(NET, "hss_unreachable", [hss], case_id="h1")
            assert await _operator("export", backup, private.url, redis_prefix) == 0
            assert "exported 2 reference cases of 1 networks" in capsys.readouterr().out
            identity = await server.host.store.identity()

            private.kill()  # down: enrolment is UNAVAILABLE, classification goes on from memory
            assert (await client.classify(NET, "pcscf-1", hss)).label == "hss_unreachable"
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await client.create_reference_case(NET, "normal", [normal])
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE and "Redis" in down.value.details()

            await private.start()  # back, and empty: it kept nothing on disk
            await eventually(lambda: _references_are(target, health_pb2.HealthCheckResponse.NOT_SERVING), 20)
            assert await _health(target, "") == health_pb2.HealthCheckResponse.SERVING
            assert server.host.holdings() == (1, 2)
            for window, label in ((normal, "normal"), (hss, "hss_unreachable")):
                diagnosis = await client.classify(NET, "pcscf-1", window)
                assert diagnosis.label == label and diagnosis.distance == pytest.approx(0, abs=1e-5)
            for refused in (
                client.create_reference_case(NET, "normal", [normal]),
                client.delete_reference_case(NET, "n1"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await refused
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "lost its data" in err.value.details()
            assert "no longer holds the 2 reference cases of 1 networks" in caplog.text
            # A replica started meanwhile holds nothing, so it takes the empty store as it is.
            fresh, fresh_target = await start_server(model_source=str(artifact), redis_url=private.url)
            assert await _health(fresh_target, REFERENCES) == health_pb2.HealthCheckResponse.SERVING

            assert await _operator("import", backup, private.url, redis_prefix) == 0
            assert (
                f"imported 2 reference cases of 1 networks from {backup} (0 left alone"
                in capsys.readouterr().out
            )
            assert await server.host.store.identity() == identity
            await eventually(lambda: _references_are(target, health_pb2.HealthCheckResponse.SERVING), 20)
            await client.create_reference_case(NET, "normal", [normal], case_id="n2")
            assert await _listed(client) == ["h1", "n1", "n2"]
            # The replica started meanwhile adopts the restored store's identity: not lost.
            await eventually(lambda: fresh.host.holdings() == (1, 3), 20)
            assert await fresh.sync._check_store()  # as its next heartbeat does
            assert fresh.host.store_lost is None
            assert await _health(fresh_target, REFERENCES) == health_pb2.HealthCheckResponse.SERVING
            assert "the reference store is back" in caplog.text
            async with _store(private.url, redis_prefix) as store:
                again = await import_cases(store, backup)
            assert (again.cases, again.skipped) == (0, 2)  # ids taken: left as they are
    finally:
        private.kill()


async def test_a_redis_restarted_from_its_aof_file_keeps_every_case(  # type: ignore[no-untyped-def]
    start_server, artifact, windows, tmp_path: Path
) -> None:
    (tmp_path / "redis").mkdir()
    private = PrivateRedis(tmp_path / "redis", aof=True)
    await private.start()
    try:
        server, target = await start_server(model_source=str(artifact), redis_url=private.url)
        async with AsyncFaultprintClient(target) as client:
            for i in range(3):
                await client.create_reference_case(
                    NET, "normal", [windows("normal", 1, seed=i)[0]], case_id=f"c{i}"
                )
            time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
            private.kill()
            await private.start()
            await eventually(lambda: _listed(client), 20)
            assert await _listed(client) == ["c0", "c1", "c2"]
            await client.create_reference_case(NET, "normal", [windows("normal", 1, seed=9)[0]], case_id="c3")
            assert server.host.store_lost is None
            assert server.host.holdings() == (1, 4)
            assert await _health(target, REFERENCES) == health_pb2.HealthCheckResponse.SERVING
    finally:
        private.kill()


async def test_an_unreadable_export_is_refused(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    bad = tmp_path / "not-an-export.parquet"
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(BackupError, match="not a readable reference-case export"):
        async with _store(redis_url, redis_prefix) as store:
            await import_cases(store, bad)


def test_with_redis_starts_a_redis_with_aof_persistence() -> None:
    probe = (
        "import os, redis; c = redis.Redis.from_url(os.environ['REDIS_URL']); "
        "print(c.config_get('appendonly')['appendonly'], c.config_get('appendfsync')['appendfsync'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out = subprocess.run([str(ROOT / "scripts/with-redis.sh"), str(ROOT / ".venv/bin/python"), "-c", probe],
                         env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.split() == ["yes", "everysec"]
