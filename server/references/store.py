"""Reference cases in Redis: example windows are the source of truth, embeddings are kept per model version.

Writes that must be atomic (create, delete) run as Lua scripts within the network's slot;
each appends its event to the network's outbox, relayed to the change stream that every
replica follows (registry/outbox.py).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import numpy as np

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.ids import ID_RULE, is_valid_id, quote
from faultprint.registry.layout import EVENTS_MAX_LEN, RedisLayout
from faultprint.registry.outbox import LUA_OUTBOX, Outbox
from faultprint.server.references.index import NORMAL_LABEL
from faultprint.server.rpc.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from faultprint.traffic.baseline import NetworkBaseline

# How long a CreateReferenceCase request id is remembered, in seconds: a client's
# retries of one enrolment fall well within a day.
REQUEST_ID_TTL_S = 24 * 3600
# Reads of a network's embedding versions a deletion makes before it gives up: one more per
# model version that embeds the network while the deletion runs.
_DELETE_ATTEMPTS = 3

# KEYS: cases, windows, outbox, embeddings, embedding versions, request
# ARGV: case id, metadata, windows, network, embeddings, version, max events, origin,
#       seconds the request id is remembered ('0': no request id; then KEYS[6] is not used)
# Returns {outcome, case id}: 1 created, 0 the case id is taken, 2 the request id was
# seen before and created the case returned.
_CREATE = (
    LUA_OUTBOX
    + """
if ARGV[9] ~= '0' then
  local earlier = redis.call('GET', KEYS[6])
  if earlier then return {2, earlier} end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return {0, ARGV[1]} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
  redis.call('SADD', KEYS[5], ARGV[6])
end
if ARGV[9] ~= '0' then redis.call('SET', KEYS[6], ARGV[1], 'EX', ARGV[9]) end
outbox(KEYS[3], 'events', ARGV[7], 'kind', 'case_created', 'network', ARGV[4], 'case_id', ARGV[1],
       'origin', ARGV[8])
return {1, ARGV[1]}
"""
)
# KEYS: cases, windows, outbox, embedding versions, then the embeddings hash of each version
# the caller read from the embedding versions set. ARGV: case id, network, max events, origin,
# then those versions. Every key a script touches comes in KEYS, as Redis asks; the versions
# are checked against the set here, so a version added since the caller read it (-1: read
# again) cannot keep an embedding of the deleted case. Returns 1 deleted, 0 no such case.
_DELETE = (
    LUA_OUTBOX
    + """
local passed = {}
for k = 5, #ARGV do passed[ARGV[k]] = true end
local versions = redis.call('SMEMBERS', KEYS[4])
if #versions ~= #ARGV - 4 then return -1 end
for _, version in ipairs(versions) do
  if not passed[version] then return -1 end
end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
for k = 5, #KEYS do redis.call('HDEL', KEYS[k], ARGV[1]) end
outbox(KEYS[3], 'events', ARGV[3], 'kind', 'case_deleted', 'network', ARGV[2], 'case_id', ARGV[1],
       'origin', ARGV[4])
return 1
"""
)


# KEYS: traffic, outbox; ARGV: network, batch id, packed windows ('' with replace: clear only),
#       replace ('1': drop earlier batches first), most batches kept, max events, origin
# Batch ids sort by time, so dropping the smallest keeps the newest traffic.
_ADD_TRAFFIC = (
    LUA_OUTBOX
    + """
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
local ids = redis.call('HKEYS', KEYS[1])
table.sort(ids)
for i = 1, #ids - tonumber(ARGV[5]) do redis.call('HDEL', KEYS[1], ids[i]) end
outbox(KEYS[2], 'events', ARGV[6], 'kind', 'baseline_traffic', 'network', ARGV[1], 'origin', ARGV[7])
return redis.call('HLEN', KEYS[1])
"""
)

# KEYS: store, events; ARGV: identity, now, max events, origin
_SET_IDENTITY = """
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created_unix_s', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'store_identity',
           'identity', ARGV[1], 'origin', ARGV[4])
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


# A stored case with its embeddings under one version or, when that version has not
# embedded it yet (None), its example windows.
LoadedCase = tuple[StoredCase, np.ndarray | None, np.ndarray | None]


def check_id(kind: str, value: str, optional: bool = False) -> str:
    """value, if it is a valid id (or, when optional, empty); else InvalidArgument."""
    if not (optional and not value) and not is_valid_id(value):
        raise InvalidArgument(
            f"{kind} {quote(value)} is not a valid id: use {ID_RULE}", field=kind, reason="INVALID_ID"
        )
    return value


# Batches of unlabelled traffic a network keeps for its baseline (each of up to 64 windows): 32
# batches hold a day of 8 nodes at one window an hour several times over, 30 MB at most.
TRAFFIC_MAX_BATCHES = 32


def _pack_traffic(windows: np.ndarray) -> bytes:
    """(count, steps, features) as three little-endian uint32, then the float32 values."""
    return np.asarray(windows.shape, "<u4").tobytes() + windows.astype("<f4").tobytes()


def _unpack_traffic(blob: bytes) -> np.ndarray:
    shape = tuple(int(v) for v in np.frombuffer(blob[:12], "<u4"))
    return np.frombuffer(blob[12:], "<f4").reshape(shape)


def windows_from_bytes(blob: bytes, case: StoredCase) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").reshape(case.window_count, case.steps, case.features)


@dataclass(frozen=True)
class StoredBaseline:
    """A network's baseline as one model version reads it, with where it came from."""

    network: str
    version: str
    baseline: NetworkBaseline
    # Cases labelled normal it was learned from.
    normal_cases: int
    # Windows of unlabelled traffic it was learned from too.
    traffic_windows: int
    # The embedding space its cases' embeddings are stored under (see embedding_space).
    space: str
    updated_unix_s: float


def embedding_space(version: str, baseline: NetworkBaseline | None) -> str:
    """What stored embeddings are keyed by: the model version, and for a model that reads
    network baselines the digest of the baseline too, so that a new baseline never reads
    embeddings computed against an old one."""
    if baseline is None:
        return version
    return f"{version}~{hashlib.sha256(baseline.to_bytes()).hexdigest()[:12]}"


class ReferenceStore:
    """Reads and writes reference cases for every network of one deployment."""

    def __init__(self, client: AsyncRedis, layout: RedisLayout, origin: str) -> None:
        self._redis = client
        self._layout = layout
        self.origin = origin
        self.outbox = Outbox(client, layout, origin)
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)
        self._set_identity = client.register_script(_SET_IDENTITY)
        self._add_traffic = client.register_script(_ADD_TRAFFIC)

    async def create(
        self,
        network: str,
        case_id: str,
        label: str,
        description: str,
        windows: np.ndarray,
        version: str,
        embeddings: np.ndarray | None,
        request_id: str = "",
    ) -> tuple[StoredCase, bool]:
        """Stores a new case with its windows and its embeddings under version (none when
        version is empty: replicas embed it when the event reaches them).

        Returns the case and whether this call created it: False when request_id was
        seen before, and the case that request created is returned (a client's retry).
        """
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
        outcome, stored_id = await self._store(case, windows, version, embeddings, request_id)
        if outcome == "replayed":
            return await self.get(network, stored_id), False
        return case, True

    async def restore(self, cases: Sequence[tuple[StoredCase, np.ndarray]]) -> int:
        """Stores exported cases as they were, without embeddings (replicas embed them under
        their version when the events reach them), in one pipelined round trip; a case whose
        id is taken is left as it is. Returns how many were stored."""
        networks = sorted({case.network for case, _ in cases})
        await self._will_write(networks)
        pipe = self._redis.pipeline(transaction=False)
        for case, windows in cases:
            keys, args = (
                self._create_keys(case.network, "", ""),
                self._create_args(case, windows, "", None, ""),
            )
            await self._create(keys=keys, args=args, client=cast(Any, pipe))  # a pipeline queues the call
        replies = await pipe.execute()
        for network in networks:
            await self.outbox.relay(network)
        return sum(1 for outcome, _ in replies if outcome == 1)

    async def _will_write(self, networks: Sequence[str]) -> None:
        """Lists networks about to be written among the deployment's networks and outboxes (both
        sets only grow: a network that loses its last case is listed with none)."""
        if networks:
            await self._redis.sadd(self._layout.networks, *networks)
            await self.outbox.announce(networks)

    async def _store(
        self, case: StoredCase, windows: np.ndarray, version: str, embeddings: np.ndarray | None,
        request_id: str,
    ) -> tuple[str, str]:  # fmt: skip
        """Runs the create script: 'created' or 'replayed', and the stored case's id."""
        await self._will_write([case.network])
        outcome, stored_id = await self._create(
            keys=self._create_keys(case.network, version, request_id),
            args=self._create_args(case, windows, version, embeddings, request_id),
        )
        await self.outbox.relay(case.network)
        if outcome == 2:
            return "replayed", stored_id.decode()
        if outcome == 0:
            raise AlreadyExists(
                f"reference case {case.case_id!r} already exists in network {case.network!r}",
                field="reference_case_id",
            )
        return "created", case.case_id

    def _create_keys(self, network: str, version: str, request_id: str) -> list[str]:
        lay = self._layout
        return [
            lay.cases(network),
            lay.windows(network),
            lay.outbox(network),
            lay.embeddings(version, network),
            self._layout.embedding_versions(network),
            lay.request(network, request_id or "-"),
        ]

    def _create_args(
        self, case: StoredCase, windows: np.ndarray, version: str, embeddings: np.ndarray | None,
        request_id: str,
    ) -> list[bytes | str | int | float]:  # fmt: skip
        return [
            case.case_id,
            case.to_json(),
            windows.astype("<f4").tobytes(),
            case.network,
            b"" if embeddings is None else embeddings.astype("<f4").tobytes(),
            version,
            EVENTS_MAX_LEN,
            self.origin,
            REQUEST_ID_TTL_S if request_id else 0,
        ]

    async def identity(self) -> str | None:
        """The store's identity; None in a Redis that has never held this deployment's cases
        or has lost its data."""
        raw = await self._redis.hget(self._layout.store, "id")
        return None if raw is None else cast(bytes, raw).decode()

    async def claim_identity(self) -> str:
        """Gives the store a new identity if it has none; returns the one it has."""
        key = self._layout.store
        if await self._redis.hsetnx(key, "id", uuid.uuid4().hex):
            await self._redis.hset(key, "created_unix_s", time.time())
        return cast(str, await self.identity())

    async def replace_identity(self, identity: str) -> bool:
        """Gives the store this identity (an import restores its export's), with the event
        that tells replicas; False when it had it already."""
        lay = self._layout
        return bool(
            await self._set_identity(
                keys=[lay.store, lay.events], args=[identity, time.time(), EVENTS_MAX_LEN, self.origin]
            )
        )

    async def delete(self, network: str, case_id: str) -> None:
        lay = self._layout
        versions_key = self._layout.embedding_versions(network)
        deleted = -1
        await self.outbox.announce([network])
        for _ in range(_DELETE_ATTEMPTS):  # again only if a model version embedded the network meanwhile
            members = await self._redis.smembers(versions_key)
            versions = sorted(v.decode() if isinstance(v, bytes) else v for v in members)
            embeddings = [lay.embeddings(version, network) for version in versions]
            deleted = await self._delete(
                keys=[
                    lay.cases(network),
                    lay.windows(network),
                    lay.outbox(network),
                    versions_key,
                    *embeddings,
                ],
                args=[case_id, network, EVENTS_MAX_LEN, self.origin, *versions],
            )
            if deleted != -1:
                break
        await self.outbox.relay(network)
        if deleted == -1:
            raise Unavailable(
                f"reference case {case_id!r} was not deleted: model versions kept embedding network "
                f"{network!r} meanwhile; retry",
                reason="CONCURRENT_CHANGE",
            )
        if not deleted:
            raise NotFound(f"no reference case {case_id!r} in network {network!r}", reason="UNKNOWN_CASE")

    async def get(self, network: str, case_id: str) -> StoredCase:
        raw = await self._redis.hget(self._layout.cases(network), case_id)
        if raw is None:
            raise NotFound(f"no reference case {case_id!r} in network {network!r}", reason="UNKNOWN_CASE")
        return StoredCase.from_json(raw)

    async def get_windows(self, case: StoredCase) -> np.ndarray:
        blob = cast(bytes | None, await self._redis.hget(self._layout.windows(case.network), case.case_id))
        if blob is None:
            raise NotFound(f"reference case {case.case_id!r} has no stored windows")
        return windows_from_bytes(blob, case)

    async def list_cases(self, network: str) -> list[StoredCase]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self._layout.cases(network)))
        return sorted((StoredCase.from_json(v) for v in raw.values()), key=lambda c: c.case_id)

    async def export_network(self, network: str) -> list[tuple[StoredCase, bytes]]:
        """Every case of a network with its packed windows, in case order; one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._layout.cases(network))
        pipe.hgetall(self._layout.windows(network))
        cases_raw, windows_raw = await pipe.execute()
        cases = sorted((StoredCase.from_json(v) for v in cases_raw.values()), key=lambda c: c.case_id)
        return [(c, windows_raw[c.case_id.encode()]) for c in cases if c.case_id.encode() in windows_raw]

    async def networks(self) -> list[str]:
        members = cast(set[bytes], await self._redis.smembers(self._layout.networks))
        return sorted(m.decode() for m in members)

    async def load_network(
        self, network: str, version: str, case_ids: Sequence[str] | None = None
    ) -> list[LoadedCase]:
        """A network's cases (all, or only case_ids) with their embeddings under version where
        stored, and otherwise their windows; two round trips, the second only for windows.
        Cases deleted meanwhile are left out."""
        lay = self._layout
        pipe = self._redis.pipeline(transaction=False)
        for key in (lay.cases(network), lay.embeddings(version, network)):
            if case_ids is None:
                pipe.hgetall(key)
            else:
                pipe.hmget(key, list(case_ids))
        replies = await pipe.execute()
        if case_ids is not None:
            replies = [dict(zip([c.encode() for c in case_ids], reply, strict=True)) for reply in replies]
        cases_raw, emb_raw = replies
        cases = {key: StoredCase.from_json(meta) for key, meta in cases_raw.items() if meta is not None}
        missing = [key for key in cases if emb_raw.get(key) is None]
        windows_raw = await self._redis.hmget(lay.windows(network), missing) if missing else []
        blobs = dict(zip(missing, windows_raw, strict=True))
        loaded: list[LoadedCase] = []
        for key, case in cases.items():
            emb_blob = emb_raw.get(key)
            if emb_blob is not None:
                emb = np.frombuffer(emb_blob, "<f4").reshape(case.window_count, -1)
                loaded.append((case, None, emb))
            elif (blob := blobs.get(key)) is not None:
                loaded.append((case, windows_from_bytes(blob, case), None))
        return loaded

    async def normal_windows(
        self, network: str, cases: Sequence[StoredCase]
    ) -> tuple[np.ndarray | None, int]:
        """The windows of the cases (of network) labelled normal, stacked, and how many cases
        those are; (None, 0) without any. One round trip."""
        normal = [c for c in cases if c.label == NORMAL_LABEL]
        if not normal:
            return None, 0
        blobs = cast(list[bytes | None], await self._redis.hmget(self._layout.windows(network),
                                                                [c.case_id for c in normal]))  # fmt: skip
        windows = [windows_from_bytes(b, c) for c, b in zip(normal, blobs, strict=True) if b is not None]
        return (np.concatenate(windows), len(windows)) if windows else (None, 0)

    async def add_traffic(self, network: str, windows: np.ndarray, replace: bool) -> int:
        """Stores a batch of unlabelled windows of the network's traffic (after dropping earlier
        ones when replace; windows may then be empty, to clear), keeps the newest
        TRAFFIC_MAX_BATCHES, and tells every replica; returns the batches kept."""
        batch = f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
        packed = b"" if not len(windows) else _pack_traffic(windows)
        await self.outbox.announce([network])
        kept = await self._add_traffic(
            keys=[self._layout.traffic(network), self._layout.outbox(network)],
            args=[network, batch, packed, "1" if replace else "0", TRAFFIC_MAX_BATCHES, EVENTS_MAX_LEN,
                  self.origin],
        )  # fmt: skip
        await self.outbox.relay(network)
        return int(kept)

    async def traffic_windows(self, network: str) -> np.ndarray | None:
        """Every stored window of the network's unlabelled traffic, stacked; None without any."""
        blobs = cast(dict[bytes, bytes], await self._redis.hgetall(self._layout.traffic(network)))
        batches = [_unpack_traffic(blobs[k]) for k in sorted(blobs)]
        return np.concatenate(batches) if batches else None

    async def save_baseline(self, network: str, version: str, baseline: NetworkBaseline, normal_cases: int,
                            traffic_windows: int, space: str) -> None:  # fmt: skip
        """Stores the baseline the version reads the network's windows against."""
        await self._redis.hset(
            self._layout.baseline(version, network),
            mapping={
                "packed": baseline.to_bytes(),
                "band": baseline.band.astype("<f4").tobytes() if baseline.band is not None else b"",
                "minutes": baseline.minutes,
                "normal_cases": normal_cases,
                "traffic_windows": traffic_windows,
                "space": space,
                "updated_unix_s": time.time(),
            },
        )

    async def load_baseline(self, network: str, version: str) -> StoredBaseline | None:
        """The stored baseline of the network under the version; None when there is none."""
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self._layout.baseline(version, network)))
        if not raw:
            return None
        baseline = NetworkBaseline.from_bytes(raw[b"packed"], int(raw[b"minutes"]))
        band = np.frombuffer(raw.get(b"band", b""), "<f4")
        if len(band) == len(baseline.centre):
            baseline = replace(baseline, band=band.copy())
        return StoredBaseline(network, version, baseline, int(raw[b"normal_cases"]),
                              int(raw.get(b"traffic_windows", 0)), raw[b"space"].decode(),
                              float(raw[b"updated_unix_s"]))  # fmt: skip

    async def drop_embeddings(self, network: str, space: str) -> None:
        """Forgets the network's embeddings in a space no replica reads any more."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._layout.embeddings(space, network))
        pipe.srem(self._layout.embedding_versions(network), space)
        await pipe.execute()

    async def store_embeddings(self, network: str, version: str, embeddings: dict[str, np.ndarray]) -> None:
        if not embeddings:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            self._layout.embeddings(version, network),
            mapping={k: v.astype("<f4").tobytes() for k, v in embeddings.items()},
        )
        pipe.sadd(self._layout.embedding_versions(network), version)
        await pipe.execute()
