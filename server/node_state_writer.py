"""Write-behind of each node's latest embedding and diagnosis to Redis, off the request path.

Recording is a dict assignment: the latest diagnosis per node replaces any not yet
written. A background task writes what is pending in one pipeline per flush, each
node as one SET of its serialized NodeDiagnosis (the message GetNodeDiagnosis
returns) with its TTL: one command per node, which redis-py packs in about half the
time of a hash and its EXPIRE. If Redis is down, the pending states are dropped with
a log line: they are a cache of what the next window will say again, never the
source of truth.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import redis.asyncio as aioredis
import redis.exceptions

from faultprint.v1 import diagnosis_pb2, model_service_pb2
from server.redis_layout import RedisLayout

log = logging.getLogger(__name__)


class NodeStateWriter:
    def __init__(
        self, client: aioredis.Redis, layout: RedisLayout, ttl_s: int, flush_interval_s: float = 0.05
    ) -> None:
        self._redis = client
        self._layout = layout
        self._ttl_ms = ttl_s * 1000
        self._interval = flush_interval_s
        self._pending: dict[tuple[str, str], tuple[diagnosis_pb2.Diagnosis, np.ndarray, int]] = {}
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
        pipe = self._redis.pipeline(transaction=False)
        for (network, node), (diagnosis, embedding, recorded_ns) in pending.items():
            pipe.set(
                self._layout.node(network, node),
                _node_diagnosis(diagnosis, embedding, recorded_ns),
                px=self._ttl_ms,
            )
        try:
            await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            self.dropped += len(pending)
            log.warning("dropped %d node diagnoses, Redis unavailable: %s", len(pending), exc)

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
