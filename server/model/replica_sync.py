"""Keeps a replica in step with the others: follows the Redis change stream and applies each event.

At start (and after losing Redis) it reloads everything, then reads the stream from
the point it loaded at, so no change between the two is missed. Enrolments and
deletions from other replicas enter the index; a ``model_serving`` event makes a
replica that follows the registry fetch, warm and swap to that version, and a
``model_candidate`` event makes it load (or drop) the candidate it shadows.

A version this replica cannot fetch, load or validate, or (given trusted keys) whose
signature does not verify (registry/signing.py), is rejected in the registry
(registry/models.py: the stable version rolls back, a candidate is withdrawn),
so every replica returns to the last good version. Each replica also reports what it
serves and shadows, with a heartbeat, for ``faultprint-trainer status``.

A Redis restarted without its data (no persistence) would otherwise hand a replica an
empty store to re-sync to, and it would forget every reference case it serves. The store
carries an identity (server/references/store.py); a replica that holds cases and finds the
identity gone or changed, at a reconnect or at a heartbeat, keeps serving what it holds,
logs what vanished, refuses enrolments and deletions, and reports ReferenceCaseService
NOT_SERVING (server/rpc/health.py) until the store's own identity is back (an import of an
export restores it: server/references/backup.py) or the replica is restarted. An import also
announces the identity it sets on the change stream, so replicas that did not lose their
store adopt it rather than think it lost. A vanished serving pointer likewise leaves the
loaded model serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import redis.exceptions

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import candidate_version, fetch_artifact, reject_version, serving_version
from faultprint.registry.signing import TrustedKeys
from faultprint.server.model.host import ModelHost, ServingState
from faultprint.server.rpc.health import ReplicaHealth

log = logging.getLogger(__name__)

# How long one blocking stream read waits, in ms, and the retry pause after an error, in s.
_BLOCK_MS = 1000
_RETRY_S = 1.0
# Errors that say Redis is out of reach, not that a version is bad.
_REDIS_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Seconds between reports of what this replica serves.
_HEARTBEAT_S = 5.0
# Events read at once; a run of enrolments among them enters the index in one rebuild.
_READ_COUNT = 1000


class ReplicaSync:
    def __init__(
        self,
        client: AsyncRedis,
        layout: RedisLayout,
        host: ModelHost,
        follow_registry: bool,
        model_cache_dir: Path,
        health: ReplicaHealth,
        on_serving: Callable[[ServingState], None],
        address: str = "",
        worker: int = -1,
        trusted_keys: TrustedKeys | None = None,
    ) -> None:
        """on_serving is told of each version this replica starts to serve; address is where
        clients reach it, and worker which process it is, for the status report. With
        trusted_keys, a version not signed by one of them is rejected like a corrupt one."""
        self._redis = client
        self._layout = layout
        self._host = host
        self._follow_registry = follow_registry
        self._cache_dir = model_cache_dir
        self._trusted = trusted_keys
        self._health = health
        # The store identity this replica last synced with (None before its first sync), and
        # the last change-stream event it applied.
        self._identity: str | None = None
        self._last_id = b"0-0"
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        self._reported_at = 0.0
        self._on_serving = on_serving
        self.address = address
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
                await self._full_sync()
                self.synced.set()
                await self._health.update(model_loaded=self._host.current is not None)
                await self._follow()
                continue  # the store came back: sync everything again at once
            except asyncio.CancelledError:
                raise
            except (*_REDIS_LOST, OSError) as exc:
                log.warning("lost Redis (%s); retrying in %.0f s, then reloading everything", exc, _RETRY_S)
            except Exception:
                log.exception("replica sync failed; retrying")
            await asyncio.sleep(_RETRY_S)

    async def _full_sync(self) -> None:
        latest = cast(list[tuple[bytes, object]], await self._redis.xrevrange(self._layout.events, count=1))
        self._last_id = latest[0][0] if latest else b"0-0"
        if self._follow_registry:
            version = await serving_version(self._redis, self._layout)
            current = self._host.current
            if version is None and current is not None:
                log.error(
                    "the registry names no serving version (Redis lost its data?); keeping %s",
                    current.version,
                )
            elif version and (current is None or current.version != version):
                await self._swap_to(version)
        if await self._check_store():
            await self._host.reload_references()
        if self._follow_registry:
            await self._shadow(await candidate_version(self._redis, self._layout) or "")
        await self._report()

    async def _check_store(self) -> bool:
        """Whether the store still holds what this replica synced with. If not, keeps what
        the replica holds, refuses writes and says so; once the store is back, clears that."""
        identity = await self._host.store.identity()
        networks, cases = self._host.holdings()
        changed = self._identity is not None and identity != self._identity
        if changed and cases and not await self._announced(identity):
            await self._store_lost(identity, networks, cases)
            return False
        if identity is None:
            identity = await self._host.store.claim_identity()
        if self._host.store_lost is not None:
            log.warning("the reference store is back (identity %s); reloading its cases", identity)
            self._host.store_lost = None
            await self._health.update(store_lost=False)
        self._identity = identity
        return True

    async def _announced(self, identity: str | None) -> bool:
        """Whether an import set this identity in events this replica has not read yet."""
        if identity is None:
            return False
        unread = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await self._redis.xrevrange(self._layout.events, "+", b"(" + self._last_id, count=_READ_COUNT),
        )
        return any(
            fields.get(b"kind") == b"store_identity" and fields.get(b"identity") == identity.encode()
            for _, fields in unread
        )

    async def _store_lost(self, identity: str | None, networks: int, cases: int) -> None:
        if self._host.store_lost is None:
            log.error(
                "the reference store (Redis) no longer holds the %d reference cases of %d networks this "
                "replica serves: its identity went from %s to %s (Redis restarted without its data, or "
                "was flushed). Serving them from memory; enrolments and deletions are refused until "
                "an export is imported (faultprint-trainer cases import FILE) or the replica restarts",
                cases, networks, self._identity, identity or "none",
            )  # fmt: skip
        self._host.store_lost = (
            f"the reference store lost its data (identity {self._identity} is gone); this replica "
            f"serves {cases} cases from memory until an export is imported or it restarts"
        )
        await self._health.update(store_lost=True)

    async def _follow(self) -> None:
        """Applies the change stream from the last event applied; returns when a store thought
        lost is back."""
        while True:
            reply = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                await self._redis.xread(
                    {self._layout.events: self._last_id}, block=_BLOCK_MS, count=_READ_COUNT
                ),
            )
            for _stream, entries in reply:
                for events in _runs([{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]):
                    await self._apply(events)
                self._last_id = entries[-1][0]
            if time.monotonic() - self._reported_at > _HEARTBEAT_S:
                was_lost = self._host.store_lost is not None
                if await self._check_store() and was_lost:
                    return
                await self._report()

    async def _report(self) -> None:
        """Records what this replica serves and shadows, with a heartbeat."""
        current, candidate = self._host.current, self._host.candidate
        report = {
            "serving": current.version if current else None,
            "candidate": candidate.version if candidate else None,
            "store_lost": self._host.store_lost is not None,
            "address": self.address,
            **self._process,
            "heartbeat_unix_s": time.time(),
        }
        await self._redis.hset(self._layout.replicas, self._host.store.origin, json.dumps(report))
        self._reported_at = time.monotonic()

    async def _apply(self, events: list[dict[str, str]]) -> None:
        """Applies one event, or a run of case_created events of one network at once."""
        event = events[0]
        kind = event.get("kind")
        if kind in ("model_serving", "model_candidate"):
            if self._follow_registry:
                await (self._swap_to if kind == "model_serving" else self._shadow)(event["version"])
                await self._report()
            return
        if kind == "store_identity":
            if self._host.store_lost is None:
                self._identity = event["identity"]  # an import restored or replaced the store
            return
        if kind == "case_created":
            network = event["network"]
            # A replica's own enrolments are indexed already, unless their reply was lost.
            fresh = [e["case_id"] for e in events if not self._host.indexes(network, e["case_id"])]
            if not fresh:
                return
            try:
                await self._host.add_stored_cases(network, fresh)
            except Exception as exc:  # deleted again before we read them, say
                log.info("skipping %d created cases of %s: %s", len(fresh), network, exc)
        elif kind == "case_deleted":
            await self._host.remove(event["network"], event["case_id"], stored=True)
        elif kind == "baseline_traffic" and event.get("origin") != self._host.store.origin:
            await self._host.rebaseline(event["network"])

    async def _swap_to(self, version: str) -> None:
        current = self._host.current
        if current is not None and current.version == version:
            return
        try:
            artifact_dir = await self._fetch(version)
            self._on_serving(await self._host.load(artifact_dir))
            await self._health.update(model_loaded=True)
        except _REDIS_LOST:
            raise  # not the version's fault: the sync loop reconnects and tries again
        except Exception as exc:
            await self._reject(version, current.version if current else None, exc)

    async def _fetch(self, version: str) -> Path:
        """The version's artifact directory in the cache, its signature checked if keys are trusted."""
        return await fetch_artifact(self._redis, self._layout, version, self._cache_dir, self._trusted)

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
            artifact_dir = await self._fetch(version)
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


def _runs(events: list[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
    """Events in order, consecutive case_created events of one network grouped together."""
    run: list[dict[str, str]] = []
    for event in events:
        if run and not (_created(run[0]) and _created(event) and event["network"] == run[0]["network"]):
            yield run
            run = []
        run.append(event)
    if run:
        yield run


def _created(event: dict[str, str]) -> bool:
    return event.get("kind") == "case_created"
