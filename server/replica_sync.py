"""Keeps a replica in step with the others: follows the Redis change stream and applies each event.

At start (and after losing Redis) it reloads everything, then reads the stream from
the point it loaded at, so no change between the two is missed. Enrolments and
deletions from other replicas enter the index; a ``model_serving`` event makes a
replica that follows the registry fetch, warm and swap to that version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis
import redis.exceptions

from encoder.artifact import ArtifactError
from server.model_registry import fetch_artifact, serving_version
from server.redis_layout import RedisLayout
from server.serving_state import ModelHost

log = logging.getLogger(__name__)

# How long one blocking stream read waits, in ms, and the retry pause after an error, in s.
_BLOCK_MS = 1000
_RETRY_S = 1.0


class ReplicaSync:
    def __init__(
        self,
        client: aioredis.Redis,
        layout: RedisLayout,
        host: ModelHost,
        follow_registry: bool,
        model_cache_dir: Path,
        on_ready: Callable[[bool], None],
    ) -> None:
        self._redis = client
        self._layout = layout
        self._host = host
        self._follow_registry = follow_registry
        self._cache_dir = model_cache_dir
        self._on_ready = on_ready
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-sync")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                last_id = await self._full_sync()
                self.synced.set()
                self._on_ready(self._host.current is not None)
                await self._follow(last_id)
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                log.warning("lost Redis (%s); retrying in %.0f s, then reloading everything", exc, _RETRY_S)
            except Exception:
                log.exception("replica sync failed; retrying")
            await asyncio.sleep(_RETRY_S)

    async def _full_sync(self) -> bytes:
        latest = cast(list[tuple[bytes, object]], await self._redis.xrevrange(self._layout.events, count=1))
        last_id: bytes = latest[0][0] if latest else b"0-0"
        if self._follow_registry:
            version = await serving_version(self._redis, self._layout)
            current = self._host.current
            if version and (current is None or current.version != version):
                await self._swap_to(version)
        await self._host.reload_references()
        return last_id

    async def _follow(self, last_id: bytes) -> None:
        while True:
            reply = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                await self._redis.xread({self._layout.events: last_id}, block=_BLOCK_MS, count=100),
            )
            for _stream, entries in reply:
                for entry_id, fields in entries:
                    last_id = entry_id
                    await self._apply({k.decode(): v.decode() for k, v in fields.items()})

    async def _apply(self, event: dict[str, str]) -> None:
        kind = event.get("kind")
        if kind == "model_serving":
            if self._follow_registry:
                await self._swap_to(event["version"])
            return
        if event.get("origin") == self._host.store.origin:
            return  # this replica already applied its own change
        if kind == "case_created":
            try:
                await self._host.add_stored_case(event["network"], event["case_id"])
            except Exception as exc:  # deleted again before we read it, say
                log.info("skipping created case %s/%s: %s", event["network"], event["case_id"], exc)
        elif kind == "case_deleted":
            await self._host.remove(event["network"], event["case_id"], stored=True)

    async def _swap_to(self, version: str) -> None:
        current = self._host.current
        if current is not None and current.version == version:
            return
        try:
            artifact_dir = await fetch_artifact(self._redis, self._layout, version, self._cache_dir)
            await self._host.load(artifact_dir)
            self._on_ready(True)
        except (ArtifactError, OSError, ValueError) as exc:
            log.error(
                "rejected model version %s, still serving %s: %s",
                version, current and current.version, exc,
            )  # fmt: skip
