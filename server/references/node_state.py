"""Each node's latest embedding and diagnosis in Redis: written behind, off the request path, and read back.

Recording is a dict assignment: the latest diagnosis per node replaces any not yet
written. A background task writes what is pending at each flush: each node is one
key holding its serialized NodeDiagnosis (the message GetNodeDiagnosis returns) with
its TTL, and a flush sets each network's nodes (one Redis Cluster slot) with one
server-side script call rather than one SET per node: redis-py spends tens of µs of
the event loop packing each command and reading each reply
(benchmarks/archive/2026-11-22.md). If Redis is down, the pending states are dropped
with a log line: they are a cache of what the next window will say again, never the
source of truth.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import cast

import numpy as np
import redis.exceptions

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.layout import RedisLayout
from faultprint.v1 import diagnosis_pb2, model_service_pb2

log = logging.getLogger(__name__)

# Sets each KEYS[i] to ARGV[i] with the TTL in the last ARGV, in ms. redis-py's Script
# calls it by its SHA and loads it again when Redis has lost it (a restart).
_SET_ALL_WITH_TTL = """
local ttl_ms = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[i], 'PX', ttl_ms)
end
return #KEYS
"""
# A node's diagnosis as answered, its embedding, and when it was recorded (ns).
_Pending = tuple[diagnosis_pb2.Diagnosis, np.ndarray, int]
# Nodes written per script call: bounds how long one call holds Redis (about 1 ms).
MAX_NODES_PER_WRITE = 512


class NodeStateWriter:
    def __init__(
        self, client: AsyncRedis, layout: RedisLayout, ttl_s: int, flush_interval_s: float = 0.05
    ) -> None:
        self._redis = client
        self._set_all = client.register_script(_SET_ALL_WITH_TTL)
        self._layout = layout
        self._ttl_ms = ttl_s * 1000
        self._interval = flush_interval_s
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    def record(self, diagnosis: diagnosis_pb2.Diagnosis, embedding: np.ndarray) -> None:
        """Keeps a node's diagnosis (as answered) and embedding until the next flush."""
        self._pending[(diagnosis.network, diagnosis.node)] = (diagnosis, embedding, time.time_ns())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="node-state-writer")

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        calls = list(self._calls(pending))
        written = 0
        try:
            for keys, values in calls:
                await self._set_all(keys=keys, args=[*values, self._ttl_ms])
                written += len(keys)
        except (redis.exceptions.RedisError, OSError) as exc:
            unwritten = len(pending) - written
            self.dropped += unwritten
            log.warning("dropped %d node diagnoses, Redis unavailable: %s", unwritten, exc)

    def _calls(self, pending: dict[tuple[str, str], _Pending]) -> Iterator[tuple[list[str], list[bytes]]]:
        """The keys and values of each script call: one network's nodes (one slot), at most
        MAX_NODES_PER_WRITE of them."""
        by_network: dict[str, list[tuple[str, bytes]]] = {}
        for (network, node), state in pending.items():
            by_network.setdefault(network, []).append(
                (self._layout.node(network, node), _node_diagnosis(*state))
            )
        for nodes in by_network.values():
            for start in range(0, len(nodes), MAX_NODES_PER_WRITE):
                chunk = nodes[start : start + MAX_NODES_PER_WRITE]
                yield [key for key, _ in chunk], [value for _, value in chunk]

    async def read(self, network: str, node: str) -> model_service_pb2.NodeDiagnosis | None:
        """The node's latest recorded diagnosis, by any replica; None if none is kept."""
        raw = cast(bytes | None, await self._redis.get(self._layout.node(network, node)))
        return None if raw is None else model_service_pb2.NodeDiagnosis.FromString(raw)

    async def close(self) -> None:
        """Lets the running flush finish (a write cancelled halfway can leave its Redis
        connection unusable), then writes what is still pending."""
        self._closing = True
        if self._task:
            await self._task
        await self.flush()


def _node_diagnosis(diagnosis: diagnosis_pb2.Diagnosis, embedding: np.ndarray, recorded_ns: int) -> bytes:
    state = model_service_pb2.NodeDiagnosis(
        network=diagnosis.network,
        node=diagnosis.node,
        label=diagnosis.label,
        verdict=diagnosis.verdict,
        distance=diagnosis.distance,
        model_version=diagnosis.model_version,
        embedding=embedding.tolist(),
    )
    state.record_time.FromNanoseconds(recorded_ns)
    return state.SerializeToString()
