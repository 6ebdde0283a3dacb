"""Reference cases in Redis: example windows are the source of truth, embeddings are kept per model version.

Writes that must be atomic (create, delete) run as Lua scripts, and each appends an
event to the change stream that every replica follows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import redis.asyncio as aioredis

from server.errors import AlreadyExists, InvalidArgument, NotFound
from server.redis_layout import EVENTS_MAX_LEN, ID_PATTERN, RedisLayout

# KEYS: cases, windows, networks, events, embeddings, embedding versions
# ARGV: case id, metadata, windows, network, embeddings, version, max events, origin
_CREATE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[6])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'kind', 'case_created',
           'network', ARGV[4], 'case_id', ARGV[1], 'origin', ARGV[8])
return 1
"""
# KEYS: cases, windows, networks, events, embedding versions; ARGV: case id, network, max, origin, prefix
_DELETE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
for _, version in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('HDEL', ARGV[5] .. ':emb:' .. version .. ':' .. ARGV[2], ARGV[1])
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'case_deleted',
           'network', ARGV[2], 'case_id', ARGV[1], 'origin', ARGV[4])
return 1
"""


@dataclass(frozen=True)
class StoredCase:
    """A reference case's metadata as stored."""

    network: str
    case_id: str
    label: str
    description: str
    window_count: int
    steps: int
    features: int
    create_time_unix_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoredCase:
        return cls(**json.loads(raw))


# A stored case, its example windows, and its embeddings under one version (None: not yet embedded).
LoadedCase = tuple[StoredCase, np.ndarray, np.ndarray | None]


def check_id(kind: str, value: str) -> str:
    if not ID_PATTERN.match(value):
        raise InvalidArgument(
            f"{kind} {value!r} is not a valid id: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def windows_from_bytes(blob: bytes, case: StoredCase) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").reshape(case.window_count, case.steps, case.features)


class ReferenceStore:
    """Reads and writes reference cases for every network of one deployment."""

    def __init__(self, client: aioredis.Redis, layout: RedisLayout, origin: str) -> None:
        self._redis = client
        self._layout = layout
        self.origin = origin
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)

    def embedding_versions_key(self, network: str) -> str:
        return f"{self._layout.prefix}:net:{network}:embedding_versions"

    async def create(
        self,
        network: str,
        case_id: str,
        label: str,
        description: str,
        windows: np.ndarray,
        version: str,
        embeddings: np.ndarray,
    ) -> StoredCase:
        """Stores a new case with its windows and its embeddings under version."""
        case = StoredCase(
            network=network,
            case_id=case_id or uuid.uuid4().hex[:12],
            label=label,
            description=description,
            window_count=int(windows.shape[0]),
            steps=int(windows.shape[1]),
            features=int(windows.shape[2]),
            create_time_unix_s=time.time(),
        )
        lay = self._layout
        created = await self._create(
            keys=[
                lay.cases(network),
                lay.windows(network),
                lay.networks,
                lay.events,
                lay.embeddings(version, network),
                self.embedding_versions_key(network),
            ],
            args=[
                case.case_id,
                case.to_json(),
                windows.astype("<f4").tobytes(),
                network,
                embeddings.astype("<f4").tobytes(),
                version,
                EVENTS_MAX_LEN,
                self.origin,
            ],
        )
        if not created:
            raise AlreadyExists(f"reference case {case.case_id!r} already exists in network {network!r}")
        return case

    async def delete(self, network: str, case_id: str) -> None:
        lay = self._layout
        deleted = await self._delete(
            keys=[
                lay.cases(network),
                lay.windows(network),
                lay.networks,
                lay.events,
                self.embedding_versions_key(network),
            ],
            args=[case_id, network, EVENTS_MAX_LEN, self.origin, lay.prefix],
        )
        if not deleted:
            raise NotFound(f"no reference case {case_id!r} in network {network!r}")

    async def get(self, network: str, case_id: str) -> StoredCase:
        raw = await self._redis.hget(self._layout.cases(network), case_id)
        if raw is None:
            raise NotFound(f"no reference case {case_id!r} in network {network!r}")
        return StoredCase.from_json(raw)

    async def get_windows(self, case: StoredCase) -> np.ndarray:
        blob = cast(bytes | None, await self._redis.hget(self._layout.windows(case.network), case.case_id))
        if blob is None:
            raise NotFound(f"reference case {case.case_id!r} has no stored windows")
        return windows_from_bytes(blob, case)

    async def list_cases(self, network: str) -> list[StoredCase]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self._layout.cases(network)))
        return sorted((StoredCase.from_json(v) for v in raw.values()), key=lambda c: c.case_id)

    async def networks(self) -> list[str]:
        members = cast(set[bytes], await self._redis.smembers(self._layout.networks))
        return sorted(m.decode() for m in members)

    async def load_network(
        self, network: str, version: str, case_ids: Sequence[str] | None = None
    ) -> list[LoadedCase]:
        """A network's cases (all, or only case_ids) with their windows and, if stored, their
        embeddings under version; one round trip. Cases deleted meanwhile are left out."""
        keys = (
            self._layout.cases(network),
            self._layout.windows(network),
            self._layout.embeddings(version, network),
        )
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            if case_ids is None:
                pipe.hgetall(key)
            else:
                pipe.hmget(key, list(case_ids))
        replies = await pipe.execute()
        if case_ids is not None:
            replies = [dict(zip([c.encode() for c in case_ids], reply, strict=True)) for reply in replies]
        cases_raw, windows_raw, emb_raw = replies
        loaded = []
        for key, meta in cases_raw.items():
            blob = windows_raw.get(key)
            if meta is None or blob is None:
                continue
            case = StoredCase.from_json(meta)
            emb_blob = emb_raw.get(key)
            emb = None if emb_blob is None else np.frombuffer(emb_blob, "<f4").reshape(case.window_count, -1)
            loaded.append((case, windows_from_bytes(blob, case), emb))
        return loaded

    async def store_embeddings(self, network: str, version: str, embeddings: dict[str, np.ndarray]) -> None:
        if not embeddings:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            self._layout.embeddings(version, network),
            mapping={k: v.astype("<f4").tobytes() for k, v in embeddings.items()},
        )
        pipe.sadd(self.embedding_versions_key(network), version)
        await pipe.execute()
