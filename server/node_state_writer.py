"""Write-behind of each node's latest embedding and diagnosis to Redis, off the request path.

Recording is a dict assignment: the latest diagnosis per node replaces any not yet
written. A background task writes what is pending in one pipeline per flush. If
Redis is down, the pending states are dropped with a log line: they are a cache of
what the next window will say again, never the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import redis.exceptions

from server.redis_layout import RedisLayout
from server.reference_index import Match

log = logging.getLogger(__name__)


class NodeStateWriter:
    def __init__(
        self, client: aioredis.Redis, layout: RedisLayout, ttl_s: int, flush_interval_s: float = 0.05
    ) -> None:
        self._redis = client
        self._layout = layout
        self._ttl_s = ttl_s
        self._interval = flush_interval_s
        self._pending: dict[tuple[str, str], dict[Any, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    def record(self, network: str, node: str, embedding: np.ndarray, match: Match, version: str) -> None:
        self._pending[(network, node)] = {
            "label": match.label,
            "verdict": match.verdict,
            "distance": match.distance,
            "model_version": version,
            "embedding": embedding.astype("<f4").tobytes(),
            "record_time_unix_ms": int(time.time() * 1000),
        }

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
        for (network, node), state in pending.items():
            key = self._layout.node(network, node)
            pipe.hset(key, mapping=state)
            pipe.expire(key, self._ttl_s)
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
