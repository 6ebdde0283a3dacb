"""Events reach the deployment's streams through network outboxes: relayed at once, after a writer
died, in order, once, and under one relayer at a time; on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from redis.crc import key_slot

from faultprint.registry.connection import connect_async
from faultprint.registry.layout import RedisLayout
from faultprint.registry.outbox import Outbox, outbox_address
from faultprint.server.references.store import ReferenceStore
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NETWORKS = ("net-a", "net-b", "net-c", "net-d")


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


def _event(seq: int, network: str) -> dict[str, object]:
    return {**outbox_address("incidents", 1000), "kind": "ONSET", "network": network, "id": f"i-{seq}"}


async def test_a_network_change_and_its_event_share_a_slot_and_networks_spread(
    redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    client = await connect_async(redis_url)
    layout = RedisLayout(redis_prefix)
    store = ReferenceStore(client, layout, origin="test")
    try:
        for network in NETWORKS:
            await store.create(network, "c1", "normal", "", np.ones((1, 60, 129), np.float32), "", None)
        events = await client.xrange(layout.events)
        assert [(f[b"kind"], f[b"network"].decode()) for _, f in events] == [
            (b"case_created", n) for n in NETWORKS
        ]
        for network in NETWORKS:
            assert await client.xlen(layout.outbox(network)) == 0
        slots = {_slot(layout.cases(n)) for n in NETWORKS}
        assert all(_slot(key) == _slot(layout.cases(n)) for n in NETWORKS
                   for key in (layout.outbox(n), layout.windows(n), layout.node_window(n, "x"), layout.node(n, "x")))  # fmt: skip
        assert len(slots) == len(NETWORKS)  # networks spread over slots (and masters, on a cluster)
        assert {_slot(layout.events), _slot(layout.incidents), _slot(layout.models)} == {_slot(layout.store)}
    finally:
        await client.aclose()


async def test_events_a_dead_writer_left_in_an_outbox_are_relayed_by_a_replica(  # type: ignore[no-untyped-def]
    start_server, artifact, redis_url, redis_prefix
) -> None:
    client = await connect_async(redis_url)
    layout = RedisLayout(redis_prefix)
    try:
        # A writer that announced the network and wrote its script, then died before relaying.
        await Outbox(client, layout, "dead-writer").announce(["net-a"])
        for seq in range(3):
            await client.xadd(layout.outbox("net-a"), _event(seq, "net-a"))
        await start_server(model_source=str(artifact), outbox_sweep_interval_s=0.2)
        await eventually(lambda: client.xlen(layout.incidents))
        await eventually(lambda: asyncio.sleep(0.5, True))
        ids = [f[b"id"] for _, f in await client.xrange(layout.incidents)]
        assert ids == [b"i-0", b"i-1", b"i-2"]
        assert await client.xlen(layout.outbox("net-a")) == 0
        fields = (await client.xrange(layout.incidents))[0][1]
        assert b"stream" not in fields and b"max_len" not in fields  # the address stays in the outbox
    finally:
        await client.aclose()


async def test_an_outbox_another_relayer_holds_is_left_to_it_until_its_lease_ends(
    redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    client = await connect_async(redis_url)
    layout = RedisLayout(redis_prefix)
    try:
        for seq in range(5):
            await client.xadd(layout.outbox("net-b"), _event(seq, "net-b"))
        await client.set(layout.relay_lease("net-b"), "other-replica", px=300)
        mine = Outbox(client, layout, "this-replica")
        assert await mine.relay("net-b") == 0
        assert await client.xlen(layout.incidents) == 0
        await asyncio.sleep(0.4)  # the other relayer's lease lapsed (it died)
        assert await mine.relay("net-b") == 5
        assert [f[b"id"] for _, f in await client.xrange(layout.incidents)] == [
            f"i-{i}".encode() for i in range(5)
        ]
        assert not await client.exists(layout.relay_lease("net-b"))
        assert await client.xlen(layout.outbox("net-b")) == 0
    finally:
        await client.aclose()


async def test_a_relayer_killed_between_copy_and_delete_leaves_nothing_copied_twice(
    redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    client = await connect_async(redis_url)
    layout = RedisLayout(redis_prefix)
    try:
        for seq in range(4):
            await client.xadd(layout.outbox("net-c"), _event(seq, "net-c"))
        taken = await client.xrange(layout.outbox("net-c"), count=3)
        dead = Outbox(client, layout, "dead-relayer")
        # It copied the first three, then died before deleting them from the outbox.
        assert await dead._copy("net-c", [(i, [x for kv in f.items() for x in kv]) for i, f in taken]) == 3
        await client.xadd(layout.outbox("net-c"), _event(4, "net-c"))
        assert await Outbox(client, layout, "next-relayer").relay("net-c") == 2
        assert [f[b"id"] for _, f in await client.xrange(layout.incidents)] == [
            f"i-{i}".encode() for i in range(5)
        ]
        assert await client.xlen(layout.outbox("net-c")) == 0
        await client.xadd(layout.outbox("net-c"), _event(5, "net-c"))  # an emptied outbox's ids go on growing
        assert await Outbox(client, layout, "next-relayer").relay("net-c") == 1
        assert await client.xlen(layout.incidents) == 6
    finally:
        await client.aclose()
