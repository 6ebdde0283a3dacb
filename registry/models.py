"""The model registry and rollout in Redis: versions, the stable and candidate pointers, rollback.

Only the Redis connection is shared between trainer, operators and servers. A
published version is its packed artifact, sha256, the trainer's signature of that digest
(registry/signing.py) and metadata under the deployment's prefix. Rollout moves two pointers:
- the candidate, which every replica loads next to the stable version and runs in
  shadow on a sample of live windows (server/model/shadow.py);
- the stable (serving) version, which every replica hot-swaps to on promotion.
Promotion pushes the replaced version onto a history list, so rollback restores it.
Each move is one Lua script: the pointer, the version's state and the change-stream
event that tells the replicas change together, and two operators racing cannot
leave the registry half-moved. A replica that cannot load or validate the version it
was told to serve, or (holding trusted keys) verify its signature, rolls the registry back
itself (reject_version), so every replica returns to the last good version.

Version states: candidate -> stable -> retired (replaced) | rolled_back; rejected
(failed to load, validate or verify on a replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis

from faultprint.encoder.artifact import (
    ArtifactError,
    ModelMetadata,
    check_version,
    pack_artifact,
    read_metadata,
    sha256_hex,
    unpack_artifact,
)
from faultprint.registry.connection import AsyncRedis, SyncRedis
from faultprint.registry.layout import EVENTS_MAX_LEN, RedisLayout
from faultprint.registry.signing import (
    KEY_ID_FIELD,
    SIGNATURE_FIELD,
    TrustedKeys,
    sign,
    stored_signature,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

# History entries kept for rollback.
HISTORY_MAX_LEN = 100
# A replica whose heartbeat is older than this, in seconds, is shown as stale.
REPLICA_STALE_S = 30.0


class RolloutError(Exception):
    """A rollout command that cannot be carried out (unknown version, nothing to roll back to)."""


# Every script below takes KEYS serving, candidate, history, events, then the metadata key
# of each version named in ARGV[1] (space-separated): the ones the caller read as serving,
# candidate and last in history, and the one it moves. A pointer that moved since the read
# names a version without its key there: the script changes nothing and answers 'retry'.
_LUA_META = """
local metas, i = {}, 5
for v in string.gmatch(ARGV[1], '%S+') do metas[v] = KEYS[i]; i = i + 1 end
local function known(v) return (not v) or metas[v] ~= nil end
if not (known(redis.call('GET', KEYS[1])) and known(redis.call('GET', KEYS[2]))
        and known(redis.call('LINDEX', KEYS[3], 0))) then
  return {'retry', ''}
end
local function meta(v) return metas[v] end
"""
# Reads of the pointers a rollout move makes before it gives up: another only when a
# concurrent move changed them meanwhile.
_MOVE_ATTEMPTS = 5

# ARGV: versions, version, origin, now, events max length, history max length.
_PROMOTE = (
    _LUA_META
    + """
local v = ARGV[2]
if redis.call('EXISTS', meta(v)) == 0 then
  return redis.error_reply('model version ' .. v .. ' is not in the registry')
end
local serving = redis.call('GET', KEYS[1])
if serving == v then return {'unchanged', v} end
if serving then
  redis.call('LPUSH', KEYS[3], serving)
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
  redis.call('HSET', meta(serving), 'state', 'retired', 'ended_unix_s', ARGV[4])
end
redis.call('SET', KEYS[1], v)
redis.call('HSET', meta(v), 'state', 'stable', 'promoted_unix_s', ARGV[4], 'replaces', serving or '')
if redis.call('GET', KEYS[2]) == v then redis.call('DEL', KEYS[2]) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
           'kind', 'model_serving', 'version', v, 'origin', ARGV[3])
return {'promoted', serving or ''}
"""
)

# ARGV: versions, version that must be serving ('' for any), new state, reason, origin, now, max length.
_ROLL_BACK = (
    _LUA_META
    + """
local serving = redis.call('GET', KEYS[1])
if not serving then return redis.error_reply('no model version is serving') end
if ARGV[2] ~= '' and serving ~= ARGV[2] then return {'unchanged', serving} end
local previous = redis.call('LPOP', KEYS[3])
if not previous and ARGV[3] ~= 'rejected' then
  return redis.error_reply('no earlier version to roll back to; ' .. serving .. ' stays')
end
redis.call('HSET', meta(serving), 'state', ARGV[3], 'reason', ARGV[4], 'ended_unix_s', ARGV[6])
if not previous then return {'rejected', ''} end
redis.call('SET', KEYS[1], previous)
redis.call('HSET', meta(previous), 'state', 'stable')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*',
           'kind', 'model_serving', 'version', previous, 'origin', ARGV[5])
return {'rolled_back', previous}
"""
)

# ARGV: versions, version ('' clears), origin, max length, state for a cleared candidate, reason, now.
_SET_CANDIDATE = (
    _LUA_META
    + """
local v = ARGV[2]
local current = redis.call('GET', KEYS[2])
if v == '' then
  if not current then return {'unchanged', ''} end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', meta(current), 'state', ARGV[5], 'reason', ARGV[6], 'ended_unix_s', ARGV[7])
else
  if redis.call('EXISTS', meta(v)) == 0 then
    return redis.error_reply('model version ' .. v .. ' is not in the registry')
  end
  if redis.call('GET', KEYS[1]) == v then
    return redis.error_reply('model version ' .. v .. ' is already the stable version')
  end
  if current == v then return {'unchanged', v} end
  if current then redis.call('HSET', meta(current), 'state', 'withdrawn', 'ended_unix_s', ARGV[7]) end
  redis.call('SET', KEYS[2], v)
  redis.call('HSET', meta(v), 'state', 'candidate', 'reason', '')
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*',
           'kind', 'model_candidate', 'version', v, 'origin', ARGV[3])
return {'changed', current or ''}
"""
)


def _keys(layout: RedisLayout) -> list[str]:
    return [layout.serving_version, layout.candidate_version, layout.history, layout.events]


def _queue_pointer_reads(pipe: Any, layout: RedisLayout) -> Any:
    """Queues on pipe (sync or asyncio) the reads a rollout move's metadata keys depend on: the
    serving and candidate versions and the last in history."""
    pipe.get(layout.serving_version)
    pipe.get(layout.candidate_version)
    pipe.lindex(layout.history, 0)
    return pipe


def _move_input(layout: RedisLayout, pointed: list[Any], version: str, args: tuple[str | float, ...]
                ) -> tuple[list[str], list[str | float]]:  # fmt: skip
    """KEYS and ARGV of a rollout move, given the versions the pointers named when read."""
    versions = list(dict.fromkeys(v for v in (*map(_text_or_empty, pointed), version) if v))
    keys = [*_keys(layout), *(layout.model_meta(v) for v in versions)]
    return keys, [" ".join(versions), version, *args]


def _text_or_empty(value: object) -> str:
    return "" if value is None else _text(value)


def store_artifact(client: SyncRedis, layout: RedisLayout, artifact_dir: Path,
                   annotations: dict[str, str] | None = None,
                   signing_key: Ed25519PrivateKey | None = None) -> ModelMetadata:  # fmt: skip
    """Stores an artifact directory in the registry (not yet candidate or stable), signed with
    signing_key if given; its metadata's version is checked against the id rule when it is read."""
    metadata = read_metadata(artifact_dir)
    blob = pack_artifact(artifact_dir)
    digest = sha256_hex(blob)
    signature = sign(signing_key, metadata.version, digest).fields() if signing_key else {}
    mapping: dict[Any, Any] = {
        "metadata": metadata.to_json(),
        "sha256": digest,
        **signature,
        "published_unix_s": time.time(),
        "state": "published",
        **(annotations or {}),
    }
    pipe = client.pipeline(transaction=True)
    pipe.set(layout.model_artifact(metadata.version), blob)
    pipe.hset(layout.model_meta(metadata.version), mapping=mapping)
    pipe.zadd(layout.models, {metadata.version: time.time()})
    pipe.execute()
    return metadata


def promote(client: SyncRedis, layout: RedisLayout, version: str, origin: str = "operator") -> str:
    """Makes version the stable one everywhere; returns the version it replaced ('' if none)."""
    _check_rollout_version(version)
    outcome = _run(client, _PROMOTE, layout, version, origin, time.time(), EVENTS_MAX_LEN, HISTORY_MAX_LEN)
    return outcome[1]


def roll_back(client: SyncRedis, layout: RedisLayout, reason: str, origin: str = "operator") -> str:
    """Restores the version that served before the stable one; returns it."""
    return _run(client, _ROLL_BACK, layout, "", "rolled_back", reason, origin, time.time(), EVENTS_MAX_LEN)[1]


def set_candidate(client: SyncRedis, layout: RedisLayout, version: str, origin: str = "operator",
                  reason: str = "withdrawn by the operator") -> str:  # fmt: skip
    """Makes version the candidate that replicas shadow ('' withdraws it); returns the previous one."""
    if version:
        _check_rollout_version(version)
    return _run(client, _SET_CANDIDATE, layout, version, origin, EVENTS_MAX_LEN, "withdrawn", reason,
                time.time())[1]  # fmt: skip


def publish_artifact(
    client: SyncRedis, layout: RedisLayout, artifact_dir: Path, promote_it: bool = True,
    annotations: dict[str, str] | None = None, signing_key: Ed25519PrivateKey | None = None,
) -> ModelMetadata:  # fmt: skip
    """Stores an artifact (signed with signing_key if given) and makes it the stable version
    (promote_it) or the candidate."""
    metadata = store_artifact(client, layout, artifact_dir, annotations, signing_key)
    if promote_it:
        promote(client, layout, metadata.version, origin="trainer")
    else:
        set_candidate(client, layout, metadata.version, origin="trainer")
    return metadata


def _check_rollout_version(version: str) -> None:
    try:
        check_version(version)
    except ArtifactError as exc:
        raise RolloutError(str(exc)) from exc


def _run(client: SyncRedis, script: str, layout: RedisLayout, version: str,
         *args: str | float) -> list[str]:  # fmt: skip
    """Runs a rollout move of version; reads the pointers again while a concurrent move changes them."""
    run = client.register_script(script)
    for _ in range(_MOVE_ATTEMPTS):
        keys, argv = _move_input(
            layout, _queue_pointer_reads(client.pipeline(transaction=False), layout).execute(), version, args
        )
        try:
            reply = [_text(v) for v in run(keys=keys, args=argv)]
        except redis.exceptions.ResponseError as exc:
            raise RolloutError(str(exc)) from exc
        if reply[0] != "retry":
            return reply
    raise RolloutError("the rollout pointers kept changing under concurrent moves; try again")


async def _run_async(client: AsyncRedis, script: str, layout: RedisLayout, version: str,
                     *args: str | float) -> list[str]:  # fmt: skip
    run = client.register_script(script)
    for _ in range(_MOVE_ATTEMPTS):
        keys, argv = _move_input(
            layout,
            await _queue_pointer_reads(client.pipeline(transaction=False), layout).execute(),
            version,
            args,
        )
        reply = [_text(v) for v in await run(keys=keys, args=argv)]
        if reply[0] != "retry":
            return reply
    raise RolloutError("the rollout pointers kept changing under concurrent moves; try again")


async def reject_version(
    client: AsyncRedis, layout: RedisLayout, version: str, reason: str, origin: str
) -> str:
    """A replica could not load or validate version: takes it out of rollout everywhere.

    As the stable version it is rolled back to the one before (if it still is the
    stable one); as the candidate it is withdrawn. Returns what happened, for the log.
    """
    now = time.time()
    serving = await client.get(layout.serving_version)
    if serving is not None and cast(bytes, serving).decode() == version:
        outcome = await _run_async(client, _ROLL_BACK, layout, version, "rejected", reason, origin, now,
                                   EVENTS_MAX_LEN)  # fmt: skip
        return f"rolled back to {outcome[1] or 'nothing'}" if outcome[0] != "unchanged" else "unchanged"
    candidate = await client.get(layout.candidate_version)
    if candidate is not None and cast(bytes, candidate).decode() == version:
        await _run_async(client, _SET_CANDIDATE, layout, "", origin, EVENTS_MAX_LEN, "rejected", reason, now)
        return "candidate withdrawn"
    return "no longer in rollout"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def serving_version(client: AsyncRedis, layout: RedisLayout) -> str | None:
    raw = await client.get(layout.serving_version)
    return None if raw is None else cast(bytes, raw).decode()


async def candidate_version(client: AsyncRedis, layout: RedisLayout) -> str | None:
    raw = await client.get(layout.candidate_version)
    return None if raw is None else cast(bytes, raw).decode()


async def fetch_artifact(client: AsyncRedis, layout: RedisLayout, version: str, cache_dir: Path,
                         trusted: TrustedKeys | None = None) -> Path:  # fmt: skip
    """Downloads, verifies and unpacks a version into cache_dir/version; returns that directory.

    With trusted keys, a version whose signature is missing or does not verify against one of
    them is refused (SignatureError) before anything is unpacked; the blob is then checked
    against the signed digest."""
    check_version(version)
    pipe = client.pipeline(transaction=False)
    pipe.hmget(layout.model_meta(version), ["sha256", SIGNATURE_FIELD, KEY_ID_FIELD])
    pipe.get(layout.model_artifact(version))
    (digest, signature, signer), blob = await pipe.execute()
    if trusted is not None and digest is not None:
        signed_by = trusted.verify(version, _text(digest), stored_signature(signature, signer))
        log.info("model version %s is signed by trusted key %s", version, signed_by)
    # Unpacking tens of megabytes is file work: keep it off the event loop.
    return await asyncio.to_thread(install_artifact, version, blob, digest, cache_dir)


def download_artifact(client: SyncRedis, layout: RedisLayout, version: str, cache_dir: Path) -> Path:
    """fetch_artifact for the trainer's synchronous commands."""
    check_version(version)
    digest, blob = (
        client.hget(layout.model_meta(version), "sha256"),
        client.get(layout.model_artifact(version)),
    )
    return install_artifact(version, blob, digest, cache_dir)


def install_artifact(version: str, blob: Any, digest: Any, cache_dir: Path) -> Path:
    """Verifies a stored artifact against its digest and unpacks it into cache_dir/version,
    replacing what is there. The version names that directory, so it must be an id: replacing
    cache_dir/'..' would remove the cache's parent."""
    check_version(version)
    if digest is None or blob is None:
        raise ArtifactError(f"model version {version!r} is not in the registry")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = _cache_entry(cache_dir, version)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=cache_dir))
    try:
        metadata = unpack_artifact(bytes(blob), _text(digest), staging)
        if metadata.version != version:
            raise ArtifactError(f"artifact stored as {version!r} says it is {metadata.version!r}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _cache_entry(cache_dir: Path, version: str) -> Path:
    """cache_dir/version, refused unless it resolves (links followed) to an entry of cache_dir itself."""
    root = cache_dir.resolve()
    target = root / version
    if target.resolve().parent != root:
        raise ArtifactError(f"model version {version!r} would be unpacked outside the model cache {root}")
    return target


@dataclass
class VersionStatus:
    version: str
    state: str
    published_unix_s: float
    reason: str = ""
    replaces: str = ""
    # The id of the key that signed it ('' unsigned).
    signing_key_id: str = ""
    # Mean one-shot accuracy of the model and of the raw 1-NN baseline, if evaluated.
    one_shot_accuracy: float | None = None
    baseline_accuracy: float | None = None


@dataclass
class RolloutStatus:
    """What the registry says, and what each replica reports it serves and shadows."""

    stable: str | None
    candidate: str | None
    history: list[str]
    versions: list[VersionStatus]
    # Shadow agreement counts of the candidate, summed over the replicas.
    shadow: dict[str, int]
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollout_status(client: SyncRedis, layout: RedisLayout) -> RolloutStatus:
    stable, candidate = (_maybe(client.get(k)) for k in (layout.serving_version, layout.candidate_version))
    history = [_text(v) for v in client.lrange(layout.history, 0, 9)]
    versions = [_version_status(client, layout, _text(v)) for v in client.zrevrange(layout.models, 0, 19)]
    shadow = {}
    if candidate:
        shadow = {_text(k): int(v) for k, v in client.hgetall(layout.model_shadow(candidate)).items()}
    now = time.time()
    replicas = {}
    for replica, raw in client.hgetall(layout.replicas).items():
        report = json.loads(raw)
        report["stale"] = now - float(report.get("heartbeat_unix_s", 0)) > REPLICA_STALE_S
        replicas[_text(replica)] = report
    return RolloutStatus(stable, candidate, history, versions, shadow, replicas)


def _maybe(value: Any) -> str | None:
    return None if value is None else _text(value)


def _version_status(client: SyncRedis, layout: RedisLayout, version: str) -> VersionStatus:
    meta = {_text(k): _text(v) for k, v in client.hgetall(layout.model_meta(version)).items()}
    status = VersionStatus(version, meta.get("state", "published"), float(meta.get("published_unix_s", 0)),
                           meta.get("reason", ""), meta.get("replaces", ""),
                           meta.get(KEY_ID_FIELD, ""))  # fmt: skip
    try:
        training = json.loads(meta["metadata"])["training"]
        status.one_shot_accuracy, status.baseline_accuracy = _headline(training)
    except (KeyError, ValueError, TypeError):
        pass
    return status


def _headline(training: dict[str, Any]) -> tuple[float, float]:
    """(model, raw 1-NN) one-shot figures at k = 1 from a training record: the simulated
    split's accuracy, or else the transfer protocol's balanced accuracy averaged over its networks."""
    evaluation = training.get("evaluation")
    if evaluation:
        methods = evaluation["methods"]
        return methods["model"]["accuracy"]["1"], methods["raw_1nn"]["accuracy"]["1"]
    networks = training["transfer"]["networks"]
    figures = [[n["methods"][m]["1"]["balanced_accuracy"] for n in networks] for m in ("model", "raw_1nn")]
    return float(sum(figures[0]) / len(networks)), float(sum(figures[1]) / len(networks))
