"""Clients spread over replicas (a list of addresses, a DNS name) and servers send them on after a while."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from faultprint.client.client import AsyncFaultprintClient

pytestmark = pytest.mark.integration


async def test_a_client_of_three_replicas_spreads_its_calls_and_survives_one_stopping(
    start_server, artifact_factory, windows
) -> None:  # type: ignore[no-untyped-def]
    replicas = [await start_server(model_source=str(artifact_factory(seed=s))) for s in (21, 22, 23)]
    versions = {server.host.current.version for server, _ in replicas}
    target = ",".join(address for _, address in replicas)
    window = windows("normal", 1)[0]
    async with AsyncFaultprintClient(target) as client:
        answered = [(await client.embed(window))[1] for _ in range(30)]
        assert set(answered) == versions
        assert max(answered.count(v) for v in versions) <= 12  # round robin, not one favourite
        stopped, _ = replicas[0]
        await stopped.stop()
        after = [(await client.embed(window))[1] for _ in range(20)]
    assert set(after) == versions - {stopped.host.current.version}


async def test_a_dns_target_reaches_the_replicas_its_name_resolves_to(
    start_server, artifact, windows
) -> None:  # type: ignore[no-untyped-def]
    server, address = await start_server(model_source=str(artifact), listen_address="127.0.0.1:0")
    port = address.rsplit(":", 1)[1]
    async with AsyncFaultprintClient(f"dns:///127.0.0.1:{port}") as client:
        assert (await client.model_info()).model_version == server.host.current.version


async def test_a_connection_past_its_maximum_age_is_sent_to_reconnect(start_server, artifact) -> None:  # type: ignore[no-untyped-def]
    _, target = await start_server(
        model_source=str(artifact), max_connection_age_s=1.0, max_connection_age_grace_s=0.5
    )
    async with AsyncFaultprintClient(target) as client:
        call = client.stream_minutes()
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call.read(), 20)
        lasted_s = time.monotonic() - started
        assert (await client.model_info()).model_version  # the channel reconnects by itself
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 0.5 < lasted_s < 10
