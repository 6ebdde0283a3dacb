"""Keeps a replica in step with the others: follows the Redis change stream and applies each event.

At start (and after losing Redis) it reloads everything, then reads the stream from
the point it loaded at, so no change between the two is missed. Enrolments and
deletions from other replicas enter the index; a ``model_serving`` event makes a
replica that follows the registry fetch, warm and swap to that version, and a
``model_candidate`` event makes it load (or drop) the candidate it shadows.

A version this replica cannot fetch, load or validate is rejected in the registry
(server/model_registry.py: the stable version rolls back, a candidate is withdrawn),
so every replica returns to the last good version. Each replica also reports what it
serves and shadows, with a heartbeat, for ``faultprint-trainer status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis
import redis.exceptions

from server.model_registry import candidate_version, fetch_artifact, reject_version, serving_version
from server.redis_layout import RedisLayout
from server.serving_state import ModelHost

log = logging.getLogger(__name__)

# How long one blocking stream read waits, in ms, and the retry pause after an error, in s.
_BLOCK_MS = 1000
_RETRY_S = 1.0
# Errors that say Redis is out of reach, not that a version is bad.
_REDIS_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Seconds between reports of what this replica serves.
_HEARTBEAT_S = 5.0


class ReplicaSync:
    def __init__(
        self,
        client: aioredis.Redis,
        layout: RedisLayout,
        host: ModelHost,
        follow_registry: bool,
        model_cache_dir: Path,
        on_ready: Callable[[bool], None],
        worker: int = -1,
    ) -> None:
        self._redis = client
        self._layout = layout
        self._host = host
        self._follow_registry = follow_registry
        self._cache_dir = model_cache_dir
        self._on_ready = on_ready
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        self._reported_at = 0.0
        # Where clients reach this replica, and which process it is, for the status report.
        self.address = ""
        self._process = {"pid": os.getpid(), "worker": worker if worker >= 0 else None}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-sync")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._redis.hdel(self._layout.replicas, self._host.store.origin)

    async def _run(self) -> None:
        while True:
            try:
                last_id = await self._full_sync()
                self.synced.set()
                self._on_ready(self._host.current is not None)
                await self._follow(last_id)
            except asyncio.CancelledError:
                raise
            except (*_REDIS_LOST, OSError) as exc:
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
        if self._follow_registry:
            await self._shadow(await candidate_version(self._redis, self._layout) or "")
        await self._report()
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
            if time.monotonic() - self._reported_at > _HEARTBEAT_S:
                await self._report()

    async def _report(self) -> None:
        """Records what this replica serves and shadows, with a heartbeat."""
        current, candidate = self._host.current, self._host.candidate
        report = {
            "serving": current.version if current else None,
            "candidate": candidate.version if candidate else None,
            "address": self.address,
            **self._process,
            "heartbeat_unix_s": time.time(),
        }
        await self._redis.hset(self._layout.replicas, self._host.store.origin, json.dumps(report))
        self._reported_at = time.monotonic()

    async def _apply(self, event: dict[str, str]) -> None:
        kind = event.get("kind")
        if kind in ("model_serving", "model_candidate"):
            if self._follow_registry:
                await (self._swap_to if kind == "model_serving" else self._shadow)(event["version"])
                await self._report()
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
        except _REDIS_LOST:
            raise  # not the version's fault: the sync loop reconnects and tries again
        except Exception as exc:
            await self._reject(version, current.version if current else None, exc)

    async def _shadow(self, version: str) -> None:
        """Loads the candidate to shadow the serving version ('' or the serving one: none)."""
        current, candidate = self._host.current, self._host.candidate
        if not version or (current is not None and current.version == version):
            self._host.drop_candidate()
            return
        if candidate is not None and candidate.version == version:
            return
        self._host.drop_candidate()
        try:
            artifact_dir = await fetch_artifact(self._redis, self._layout, version, self._cache_dir)
            await self._host.load_candidate(artifact_dir)
        except _REDIS_LOST:
            raise  # not the version's fault: the sync loop reconnects and tries again
        except Exception as exc:
            await self._reject(version, current.version if current else None, exc)

    async def _reject(self, version: str, serving: str | None, exc: BaseException) -> None:
        outcome = await reject_version(
            self._redis, self._layout, version, f"{type(exc).__name__}: {exc}", self._host.store.origin
        )
        log.error("rejected model version %s, still serving %s (%s): %s", version, serving, outcome, exc)
