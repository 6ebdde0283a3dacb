"""`faultprint-trainer migrate-keys` on a deployment written in the layout before hash tags: every
value moves to its Redis Cluster name with its type and TTL, a second run and a dry run change
nothing, and a key the new layout already holds is never overwritten.

The layout before hash tags only ran on a single Redis, so these tests use REDIS_URL only
(the redis_url fixture would also run them on a Redis Cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

from benchmarks.launcher import ROOT
from faultprint.registry.layout import RedisLayout
from faultprint.registry.migration import SHOWN, old_pattern
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration

NETWORKS = ("metro-eu", "rural-eu")
NODES = ("pcscf-1", "pcscf-2")
VERSIONS = ("v20240101-aaa", "v20240201-bbb")
# An embedding space of a model that reads network baselines: version~digest.
BASELINE_SPACE = f"{VERSIONS[1]}~0a1b2c3d4e5f"
# A key under the prefix that no rule of the old layout names: reported, left alone.
STRAY = "notes"

Snapshot = dict[str, tuple[bytes, bytes | None, int]]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    plain = redis.Redis.from_url(REDIS_URL)
    try:
        plain.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(
            f"integration tests need Redis at REDIS_URL={REDIS_URL} (run them with `make test`): {exc}"
        )
    with plain:
        yield plain


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A prefix no other test uses; its keys in both layouts are removed afterwards."""
    name = f"fptest-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        patterns = (old_pattern(name), *RedisLayout(name).patterns())
        keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            client.delete(*keys)


def _write_deployment_keys(client: redis.Redis, p: str, layout: RedisLayout) -> dict[str, str]:
    """The deployment's own keys, written as the older release did; returns old name -> new name."""
    client.sadd(f"{p}:networks", *NETWORKS)
    client.xadd(f"{p}:events", {"kind": "case_added", "network": NETWORKS[0]})
    client.xadd(f"{p}:incidents", {"kind": "ONSET", "incident": "inc-1"})
    client.hset(f"{p}:incidents:onap", mapping={"cursor": "0-0", "dead": "1"})
    client.xadd(f"{p}:incidents:onap:dead", {"event": "{}"})
    client.zadd(f"{p}:models", {v: i for i, v in enumerate(VERSIONS)})
    client.set(f"{p}:model:serving", VERSIONS[0])
    client.set(f"{p}:model:candidate", VERSIONS[1])
    client.rpush(f"{p}:model:history", "v20231201-zzz")
    client.hset(f"{p}:replicas", "replica-1", json.dumps({"serving": VERSIONS[0]}))
    client.hset(f"{p}:eval_sets", "/data/rows.parquet", json.dumps({"sha256": "00"}))
    client.hset(f"{p}:store", mapping={"id": uuid.uuid4().hex, "created_unix_s": "1700000000"})
    names = {f"{p}:{rest}": new for rest, new in [
        ("networks", layout.networks), ("events", layout.events), ("incidents", layout.incidents),
        ("incidents:onap", layout.onap_publisher), ("incidents:onap:dead", layout.onap_dead_letters),
        ("models", layout.models), ("model:serving", layout.serving_version),
        ("model:candidate", layout.candidate_version), ("model:history", layout.history),
        ("replicas", layout.replicas), ("eval_sets", layout.eval_sets), ("store", layout.store),
    ]}  # fmt: skip
    for v in VERSIONS:
        client.set(f"{p}:model:{v}:artifact", bytes(range(256)) * 4)
        client.hset(f"{p}:model:{v}:meta", mapping={"metadata": "{}", "state": "stable"})
        client.hset(f"{p}:model:{v}:shadow", mapping={"windows": 10, "same": 9})
        names |= {f"{p}:model:{v}:artifact": layout.model_artifact(v), f"{p}:model:{v}:meta": layout.model_meta(v),
                  f"{p}:model:{v}:shadow": layout.model_shadow(v)}  # fmt: skip
    return names


def _write_network_keys(client: redis.Redis, p: str, layout: RedisLayout, n: str) -> dict[str, str]:
    """One network's keys, written as the older release did; returns old name -> new name."""
    client.hset(f"{p}:net:{n}:cases", "case-1", json.dumps({"label": "normal"}))
    client.hset(f"{p}:net:{n}:windows", "case-1", b"\x00\x01\xff" * 100)
    client.hset(f"{p}:net:{n}:traffic", "batch-1", b"\x10" * 64)
    client.sadd(f"{p}:net:{n}:embedding_versions", VERSIONS[0], BASELINE_SPACE)
    client.set(f"{p}:net:{n}:request:req-1", "case-1", ex=3600)
    client.hset(f"{p}:net:{n}:incidents:open", "inc-1", b"\x08\x01")
    client.hset(f"{p}:net:{n}:incidents:acks", "inc-1", json.dumps({"by": "ops"}))
    client.hset(f"{p}:emb:{VERSIONS[0]}:{n}", "case-1", b"\x00" * 32)
    client.hset(f"{p}:emb:{BASELINE_SPACE}:{n}", "case-1", b"\x01" * 32)
    client.hset(f"{p}:baseline:{VERSIONS[1]}:{n}", mapping={"mean": b"\x02" * 16, "minutes": 1440})
    names = {f"{p}:net:{n}:{rest}": new for rest, new in [
        ("cases", layout.cases(n)), ("windows", layout.windows(n)), ("traffic", layout.traffic(n)),
        ("embedding_versions", layout.embedding_versions(n)), ("request:req-1", layout.request(n, "req-1")),
        ("incidents:open", layout.open_incidents(n)), ("incidents:acks", layout.incident_acks(n)),
    ]}  # fmt: skip
    names[f"{p}:emb:{VERSIONS[0]}:{n}"] = layout.embeddings(VERSIONS[0], n)
    names[f"{p}:emb:{BASELINE_SPACE}:{n}"] = layout.embeddings(BASELINE_SPACE, n)
    names[f"{p}:baseline:{VERSIONS[1]}:{n}"] = layout.baseline(VERSIONS[1], n)
    for node in NODES:
        names |= _write_node_keys(client, p, layout, n, node)
    return names


def _write_node_keys(client: redis.Redis, p: str, layout: RedisLayout, n: str, node: str) -> dict[str, str]:
    client.set(f"{p}:diag:{n}:{node}", b"\x0a\x03abc", ex=900)
    client.set(f"{p}:node:{n}:{node}:window", b"\x00" * 512)
    client.hset(f"{p}:node:{n}:{node}:condition", mapping={"minute": 29_400_000, "state": "{}"})
    client.lpush(f"{p}:node:{n}:{node}:incidents", b"\x08\x02", b"\x08\x01")
    return {
        f"{p}:diag:{n}:{node}": layout.node(n, node),
        f"{p}:node:{n}:{node}:window": layout.node_window(n, node),
        f"{p}:node:{n}:{node}:condition": layout.node_condition(n, node),
        f"{p}:node:{n}:{node}:incidents": layout.node_incidents(n, node),
    }


def _write_old_deployment(client: redis.Redis, p: str) -> dict[str, str]:
    """A deployment as the release before hash tags left it; returns old name -> new name."""
    layout = RedisLayout(p)
    names = _write_deployment_keys(client, p, layout)
    for n in NETWORKS:
        names |= _write_network_keys(client, p, layout, n)
    client.set(f"{p}:{STRAY}", "kept by hand")
    return names


def _snapshot(client: redis.Redis, p: str) -> Snapshot:
    """Every key of the deployment in either layout: its type, serialized value and TTL in ms."""
    patterns = (old_pattern(p), *RedisLayout(p).patterns())
    keys = sorted({k.decode() for pattern in patterns for k in client.scan_iter(match=pattern, count=1000)})
    return {k: (client.type(k), client.dump(k), client.pttl(k)) for k in keys}


def _migrate_keys(p: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`faultprint-trainer migrate-keys`, as an operator runs it."""
    command = [sys.executable, "-m", "faultprint.trainer", "migrate-keys", "--redis-url", REDIS_URL,
               "--redis-prefix", p, *options]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _kept(was: tuple[bytes, bytes | None, int], now: tuple[bytes, bytes | None, int]) -> bool:
    """Whether a key holds what it held, with no TTL if it had none, or a TTL that went on running."""
    ttl_kept = now[2] == -1 if was[2] == -1 else 0 < now[2] <= was[2]
    return now[:2] == was[:2] and ttl_kept


def _assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    assert sorted(after) == sorted(before), "keys were added, removed or renamed"
    changed = [key for key in before if not _kept(before[key], after[key])]
    assert not changed, f"changed: {changed}"


def _assert_moved(before: Snapshot, after: Snapshot, names: dict[str, str]) -> None:
    for old, new in names.items():
        assert old not in after, f"{old} is still there"
        assert _kept(before[old], after[new]), f"{new} does not hold what {old} held, with its TTL"


def test_every_key_moves_with_its_type_value_and_ttl_and_a_second_run_renames_nothing(
    client: redis.Redis, prefix: str
) -> None:
    names = _write_old_deployment(client, prefix)
    assert {kind for kind, _, _ in _snapshot(client, prefix).values()} == {b"string", b"hash", b"set",
                                                                             b"zset", b"list", b"stream"}  # fmt: skip
    before = _snapshot(client, prefix)

    dry = _migrate_keys(prefix, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    pairs = sorted(names.items())
    assert lines[0] == f"would rename {len(names)} keys to the Redis Cluster layout"
    assert lines[1 : SHOWN + 2] == [f"  {old} -> {new}" for old, new in pairs[:SHOWN]] + [
        f"  ... and {len(names) - SHOWN} more"
    ]
    assert lines[SHOWN + 2 :] == ["0 would be left (their new names exist)", "1 not recognised",
                                  f"  {prefix}:{STRAY}"]  # fmt: skip
    _assert_unchanged(before, _snapshot(client, prefix))

    done = _migrate_keys(prefix)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"renamed {len(names)} keys to the Redis Cluster layout",
                                        "0 left (their new names exist)", "1 not recognised",
                                        f"  {prefix}:{STRAY}"]  # fmt: skip
    after = _snapshot(client, prefix)
    _assert_moved(before, after, names)
    left = sorted(k.decode() for k in client.scan_iter(match=old_pattern(prefix), count=1000))
    assert left == [f"{prefix}:{STRAY}"], "old-layout keys remain"
    assert _kept(before[f"{prefix}:{STRAY}"], after[f"{prefix}:{STRAY}"])

    again = _migrate_keys(prefix)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[:2] == ["renamed 0 keys to the Redis Cluster layout",
                                             "0 left (their new names exist)"]  # fmt: skip
    _assert_unchanged(after, _snapshot(client, prefix))


def test_a_key_the_new_layout_already_holds_is_left_and_reported(client: redis.Redis, prefix: str) -> None:
    names = _write_old_deployment(client, prefix)
    layout = RedisLayout(prefix)
    client.sadd(layout.networks, "written-by-the-upgraded-release")
    client.hset(layout.cases(NETWORKS[0]), "case-9", "newer")
    taken = {
        layout.networks: f"{prefix}:networks",
        layout.cases(NETWORKS[0]): f"{prefix}:net:{NETWORKS[0]}:cases",
    }
    before = _snapshot(client, prefix)

    dry = _migrate_keys(prefix, "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert "2 would be left (their new names exist)" in dry.stdout.splitlines()
    _assert_unchanged(before, _snapshot(client, prefix))

    done = _migrate_keys(prefix)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [f"renamed {len(names) - 2} keys to the Redis Cluster layout",
                         "2 left (their new names exist)"]  # fmt: skip
    assert sorted(lines[2:4]) == sorted(f"  {old} (its new name {new} exists)" for new, old in taken.items())
    after = _snapshot(client, prefix)
    for new, old in taken.items():
        assert _kept(before[new], after[new]), f"{new} was overwritten"
        assert _kept(before[old], after[old]), f"{old} was not left as it was"
    _assert_moved(before, after, {old: new for old, new in names.items() if new not in taken})


async def test_a_replica_says_when_the_deployment_awaits_migrate_keys(  # type: ignore[no-untyped-def]
    start_server, artifact, redis_url, redis_prefix, caplog
) -> None:
    from faultprint.registry.connection import connect

    legacy = f"{redis_prefix}:store"
    with connect(redis_url) as writer:
        writer.hset(legacy, "id", "before-hash-tags")
        try:
            with caplog.at_level("ERROR", logger="faultprint.server.app"):
                await start_server(model_source=str(artifact))
        finally:
            writer.delete(legacy)
    said = [r.getMessage() for r in caplog.records if "migrate-keys" in r.getMessage()]
    assert len(said) == 1 and legacy in said[0]
