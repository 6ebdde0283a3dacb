"""Renames a deployment's keys from the layout before hash tags to the Redis Cluster one, keeping its data.

Before hash tags every key sat under the plain prefix P: P:networks, P:model:{version}:meta,
P:net:{N}:cases, P:emb:{space}:{N}, P:baseline:{version}:{N}, P:diag:{N}:{node},
P:node:{N}:{node}:window and so on. new_name() maps each such name to the one
registry/layout.py gives it now; migrate() renames them with RENAMENX, so a key the
upgraded deployment already wrote is never overwritten. That layout only ran on a single
Redis, so a Redis Cluster is refused. Run it with the replicas stopped: a replica that
writes a key before its old one is renamed leaves that old key behind as a conflict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis
import redis.exceptions

from faultprint.registry.connection import SyncRedis
from faultprint.registry.ids import is_valid_id
from faultprint.registry.layout import RedisLayout

# Keys asked for per SCAN call and renamed per pipeline round trip: large enough that a
# deployment of millions of keys takes few round trips, small enough not to stall Redis.
BATCH = 1000

# Names, pairs or keys a report lists before it only counts the rest.
SHOWN = 20

# Characters SCAN's MATCH reads as a glob; a prefix holding one is escaped.
_GLOB = re.compile(r"([*?\[\]\\])")

# The parts of a network's own keys: P:net:{N}:<kind>.
_NETWORK_KINDS = ("cases", "windows", "traffic", "embedding_versions")

# The parts of a model version's keys: P:model:{version}:<kind>.
_MODEL_KINDS = ("artifact", "meta", "shadow")

# The parts of a streaming node's keys: P:node:{N}:{node}:<kind>.
_NODE_KINDS = ("window", "condition", "incidents")


class MigrationError(RuntimeError):
    """A store the key migration cannot work on."""


@dataclass(frozen=True)
class LegacyKeys:
    """A deployment's keys in the layout before hash tags: (old, new) names, and those no rule maps."""

    renames: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Migration:
    """What migrate() did or, in a dry run, would do.

    renamed: the (old, new) names renamed (in a dry run, those it would rename);
    conflicts: those left alone because their new name exists; unknown: old-layout names
    no rule maps, left alone; vanished: names that expired between the scan and their rename.
    """

    dry_run: bool
    renamed: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)


def _ids(*values: str) -> bool:
    return all(is_valid_id(v) for v in values)


def _space(space: str) -> bool:
    """An embedding space: a model version, or version~digest for a network-baseline model."""
    parts = space.split("~")
    return len(parts) <= 2 and _ids(*parts)


def _deployment_key(layout: RedisLayout, parts: list[str]) -> str | None:
    match parts:
        case ["networks"]:
            return layout.networks
        case ["events"]:
            return layout.events
        case ["models"]:
            return layout.models
        case ["replicas"]:
            return layout.replicas
        case ["eval_sets"]:
            return layout.eval_sets
        case ["store"]:
            return layout.store
        case ["incidents"]:
            return layout.incidents
        case ["incidents", "onap"]:
            return layout.onap_publisher
        case ["incidents", "onap", "dead"]:
            return layout.onap_dead_letters
        case ["model", "serving"]:
            return layout.serving_version
        case ["model", "candidate"]:
            return layout.candidate_version
        case ["model", "history"]:
            return layout.history
        case ["model", version, kind] if kind in _MODEL_KINDS and _ids(version):
            return _model_key(layout, version, kind)
    return None


def _model_key(layout: RedisLayout, version: str, kind: str) -> str:
    if kind == "artifact":
        return layout.model_artifact(version)
    return layout.model_meta(version) if kind == "meta" else layout.model_shadow(version)


def _network_key(layout: RedisLayout, parts: list[str]) -> str | None:
    match parts:
        case ["net", network, kind] if kind in _NETWORK_KINDS and _ids(network):
            return _network_own_key(layout, network, kind)
        case ["net", network, "request", request_id] if _ids(network, request_id):
            return layout.request(network, request_id)
        case ["net", network, "incidents", "open"] if _ids(network):
            return layout.open_incidents(network)
        case ["net", network, "incidents", "acks"] if _ids(network):
            return layout.incident_acks(network)
        case ["emb", space, network] if _space(space) and _ids(network):
            return layout.embeddings(space, network)
        case ["baseline", version, network] if _ids(version, network):
            return layout.baseline(version, network)
        case ["diag", network, node] if _ids(network, node):
            return layout.node(network, node)
        case ["node", network, node, kind] if kind in _NODE_KINDS and _ids(network, node):
            return _node_key(layout, network, node, kind)
    return None


def _network_own_key(layout: RedisLayout, network: str, kind: str) -> str:
    names = {
        "cases": layout.cases,
        "windows": layout.windows,
        "traffic": layout.traffic,
        "embedding_versions": layout.embedding_versions,
    }
    return names[kind](network)


def _node_key(layout: RedisLayout, network: str, node: str, kind: str) -> str:
    names = {
        "window": layout.node_window,
        "condition": layout.node_condition,
        "incidents": layout.node_incidents,
    }
    return names[kind](network, node)


def new_name(layout: RedisLayout, old: str) -> str | None:
    """The name layout gives the key called old before hash tags; None if old is no such key."""
    head = f"{layout.prefix}:"
    if not old.startswith(head):
        return None
    parts = old[len(head) :].split(":")
    return _deployment_key(layout, parts) or _network_key(layout, parts)


def old_pattern(prefix: str) -> str:
    """The SCAN pattern of every key under prefix in the layout before hash tags."""
    return _GLOB.sub(r"\\\1", prefix) + ":*"


def _text(key: bytes | str) -> str | None:
    if isinstance(key, str):
        return key
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


def legacy_keys(client: SyncRedis, prefix: str) -> LegacyKeys:
    """The deployment's keys in the layout before hash tags, with their new names (sorted)."""
    layout = RedisLayout(prefix)
    found = LegacyKeys()
    scanned = set(client.scan_iter(match=old_pattern(prefix), count=BATCH))
    for key in scanned:
        old = _text(key)
        new = new_name(layout, old) if old is not None else None
        if old is not None and new is not None:
            found.renames.append((old, new))
        else:
            found.unknown.append(old if old is not None else repr(key))
    found.renames.sort()
    found.unknown.sort()
    return found


def _single(client: SyncRedis) -> redis.Redis:
    if isinstance(client, redis.RedisCluster):
        raise MigrationError(
            "the layout before hash tags only ran on a single Redis: point --redis-url at the Redis "
            "the old release used, not at a Redis Cluster"
        )
    return client


def _chunks(pairs: Sequence[tuple[str, str]]) -> Iterable[Sequence[tuple[str, str]]]:
    return (pairs[start : start + BATCH] for start in range(0, len(pairs), BATCH))


def _rename_chunk(client: redis.Redis, chunk: Sequence[tuple[str, str]], done: Migration) -> None:
    pipe = client.pipeline(transaction=False)
    for old, new in chunk:
        pipe.renamenx(old, new)
    for (old, new), reply in zip(chunk, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(reply, redis.exceptions.ResponseError):
            if "no such key" not in str(reply).lower():
                raise reply
            done.vanished.append(old)
        else:
            (done.renamed if reply else done.conflicts).append((old, new))


def _check_chunk(client: redis.Redis, chunk: Sequence[tuple[str, str]], planned: Migration) -> None:
    pipe = client.pipeline(transaction=False)
    for _, new in chunk:
        pipe.exists(new)
    for pair, taken in zip(chunk, pipe.execute(), strict=True):
        (planned.conflicts if taken else planned.renamed).append(pair)


def migrate(client: SyncRedis, prefix: str, dry_run: bool = False) -> Migration:
    """Renames every key of the deployment under prefix to its Redis Cluster name, never over an
    existing key; a dry run only tells which it would rename and which it would leave."""
    single = _single(client)
    found = legacy_keys(single, prefix)
    result = Migration(dry_run=dry_run, unknown=found.unknown)
    step = _check_chunk if dry_run else _rename_chunk
    for chunk in _chunks(found.renames):
        step(single, chunk, result)
    return result


def _listed(lines: Sequence[str]) -> list[str]:
    shown = [f"  {line}" for line in lines[:SHOWN]]
    return shown + ([f"  ... and {len(lines) - SHOWN} more"] if len(lines) > SHOWN else [])


def report_lines(result: Migration) -> list[str]:
    """What an operator reads: one line per count, each followed by its first names."""
    pairs = [f"{old} -> {new}" for old, new in result.renamed]
    conflicts = [f"{old} (its new name {new} exists)" for old, new in result.conflicts]
    if result.dry_run:
        lines = [f"would rename {len(pairs)} keys to the Redis Cluster layout", *_listed(pairs)]
        lines.append(f"{len(conflicts)} would be left (their new names exist)")
    else:
        lines = [f"renamed {len(pairs)} keys to the Redis Cluster layout"]
        lines.append(f"{len(conflicts)} left (their new names exist)")
    lines += _listed(conflicts)
    lines += [f"{len(result.unknown)} not recognised", *_listed(result.unknown)]
    if result.vanished:
        lines.append(f"{len(result.vanished)} expired before their rename")
    return lines


def legacy_markers(prefix: str) -> tuple[str, str]:
    """Keys every deployment from before hash tags held (its store identity and its versions): a
    replica that finds one warns that the deployment awaits migrate-keys."""
    return f"{prefix}:store", f"{prefix}:models"
