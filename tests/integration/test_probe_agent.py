"""The probe agent over real replicas: row files streamed minute by minute, a replica stopped
mid-run with the agent moving to the other and losing no minute, and an exporter's directory followed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from faultprint.client.agent import AgentOptions, ProbeAgent
from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.traffic.rows import Rows, write_rows
from faultprint.traffic.simulator import PROFILES, simulate_timeline
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-agent"
START = 29_100_000
NODES = ("pcscf-a", "pcscf-b")


def _rows(first: int, minutes: int, seed: int) -> Rows:
    parts = []
    for i, node in enumerate(NODES):
        values, labels = simulate_timeline(
            PROFILES["metro-eu"], first, minutes, [], np.random.default_rng(seed + i)
        )
        parts.append({"node": np.full(minutes, node), "network": np.full(minutes, NET),
                      "minute": np.arange(first, first + minutes, dtype=np.int64), "values": values,
                      "label": labels})  # fmt: skip
    return Rows.concat(parts)


async def _enrol_normal(target: str) -> None:
    values, _ = simulate_timeline(PROFILES["metro-eu"], START - 1440, 1440, [], np.random.default_rng(1))
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", list(values.astype(np.float32).reshape(24, 60, -1)))


def _ring_minutes(redis_url: str, prefix: str, node: str) -> list[int]:
    ring = connect(redis_url).get(RedisLayout(prefix).node_window(NET, node))
    assert ring is not None
    return sorted(np.frombuffer(ring, [("minute", "<i8"), ("values", "<f4", (129,))])["minute"].tolist())


async def test_the_agent_moves_to_another_replica_when_one_stops_and_loses_no_minute(
    start_server, artifact, redis_url, redis_prefix, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    first, first_target = await start_server(model_source=str(artifact))
    second, second_target = await start_server(model_source=str(artifact))
    await _enrol_normal(first_target)
    minutes = 150
    write_rows(_rows(START, minutes, 7), tmp_path / "export.parquet")
    options = AgentOptions((first_target, second_target), tmp_path / "export.parquet", batch_minutes=10,
                           max_unacknowledged=2, minutes_per_second=200, reconnect_s=0.05)  # fmt: skip
    agent = ProbeAgent(options)
    run = asyncio.create_task(agent.run())
    await eventually(lambda: agent.tally.minutes >= 120)
    await first.stop()
    tally = await asyncio.wait_for(run, 60)
    assert tally.reconnects >= 1
    # Every minute was taken once: accepted by a replica, or found already stored when resent.
    assert tally.accepted + tally.duplicates == minutes * len(NODES)
    assert tally.refused == 0 and tally.late == 0
    # Each newest minute with a full hour diagnosed once, by one replica or the other (a request
    # the first stored but could not acknowledge comes back as duplicates, not diagnosed twice).
    diagnosed = first.monitor.stats.diagnosed + second.monitor.stats.diagnosed
    assert diagnosed == (minutes - 59) * len(NODES) and tally.diagnosed <= diagnosed
    for node in NODES:
        assert _ring_minutes(redis_url, redis_prefix, node) == list(
            range(START + minutes - 60, START + minutes)
        )
    async with AsyncFaultprintClient(second_target) as client:
        condition = await client.node_condition(NET, NODES[0])
    assert condition.last_minute == START + minutes - 1


async def test_the_agent_follows_an_exporters_directory(
    start_server, artifact, redis_url, redis_prefix, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _server, target = await start_server(model_source=str(artifact))
    await _enrol_normal(target)
    export = tmp_path / "export"
    export.mkdir()
    write_rows(_rows(START, 60, 3), export / "0001.parquet")
    agent = ProbeAgent(AgentOptions((target,), export, follow=True, poll_s=0.05))
    run = asyncio.create_task(agent.run())
    await eventually(lambda: agent.tally.accepted == 60 * len(NODES))
    write_rows(_rows(START + 60, 5, 4), export / "0002.parquet")
    await eventually(lambda: agent.tally.accepted == 65 * len(NODES))
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert agent.tally.diagnosed == 6 * len(NODES)
    assert _ring_minutes(redis_url, redis_prefix, NODES[1])[-1] == START + 64
