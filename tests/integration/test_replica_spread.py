"""Clients spread over replicas (a list of addresses, a DNS name) and servers send them on after a while;
replicas behind one client share one Redis (or Redis Cluster)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import publish_artifact
from tests.integration.support import eventually

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


async def test_three_replicas_behind_one_client_share_what_it_enrols_through_any_of_them(
    start_server, artifact, redis_url, redis_prefix, windows
) -> None:  # type: ignore[no-untyped-def]
    with connect(redis_url) as registry:
        publish_artifact(registry, RedisLayout(redis_prefix), artifact)
    replicas = [await start_server() for _ in range(3)]  # each serves the registry's stable version
    networks = ("net-1", "net-2", "net-3")
    labels = ("normal", "hss_unreachable")
    examples = {(n, label): windows(label, 1, seed=i)[0] for i, n in enumerate(networks) for label in labels}
    async with AsyncFaultprintClient(",".join(address for _, address in replicas)) as spread:
        for (network, label), window in examples.items():  # six enrolments over three replicas
            await spread.create_reference_case(network, label, [window], case_id=label)
        await eventually(lambda: all(server.host.holdings() == (3, 6) for server, _ in replicas))
        for _, address in replicas:
            async with AsyncFaultprintClient(address) as one:
                for (network, label), window in examples.items():
                    assert (await one.classify(network, "pcscf-1", window)).label == label
        await spread.delete_reference_case("net-2", "hss_unreachable")
        await eventually(lambda: all(server.host.holdings() == (3, 5) for server, _ in replicas))


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
