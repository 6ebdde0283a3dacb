"""Rollout through the trainer's commands against two real replicas on one Redis.

Publish as candidate (both replicas shadow it and report agreement), promote (both
serve it), roll back (both return); and the publishing gate that refuses a model
evaluating worse than the stable one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import rollout_status
from faultprint.trainer.__main__ import main as trainer_main
from faultprint.trainer.evaluation import EvaluationOptions
from faultprint.trainer.publishing import PublishRefused, evaluate_artifact, publish_gated
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-r"


def registry_cli(redis_url: str, prefix: str) -> Callable[..., asyncio.Future[int]]:
    """Runs `faultprint-trainer <args>` against the test's registry, off the event loop."""

    def run(*args: str) -> asyncio.Future[int]:
        argv = [*args, "--redis-url", redis_url, "--redis-prefix", prefix]
        return asyncio.ensure_future(asyncio.to_thread(trainer_main, argv))

    return run


async def test_candidate_shadow_promote_and_rollback_reach_both_replicas(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, windows, capsys
) -> None:
    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    cli = registry_cli(redis_url, redis_prefix)
    first, second = artifact_factory(seed=21), artifact_factory(seed=22)
    v1, v2 = first.name, second.name
    assert await cli("publish", str(first), "--promote") == 0
    servers = [await start_server(model_source="redis", shadow_sample_rate=1.0) for _ in range(2)]
    clients = [AsyncFaultprintClient(target) for _, target in servers]
    try:
        for condition in ("normal", "hss_unreachable"):
            await clients[0].create_reference_case(NET, condition, [windows(condition, 1)[0]])

        # Publish as candidate: both replicas load it next to v1 and shadow live windows.
        assert await cli("publish", str(second), "--force") == 0
        for client in clients:
            await eventually(lambda c=client: _candidate_of(c, v2), timeout_s=30)
        assert len(sync_redis.hkeys(layout.embeddings(v2, NET))) == 2  # references embedded by v2 too
        for i in range(10):
            for client in clients:
                served = await client.classify(NET, f"pcscf-{i}", windows("normal", 1, seed=i)[0])
                assert served.model_version == v1
        await eventually(lambda: int(sync_redis.hget(layout.model_shadow(v2), "windows") or 0) == 20)
        status = rollout_status(sync_redis, layout)
        assert (status.stable, status.candidate) == (v1, v2)
        changes = sum(n for k, n in status.shadow.items() if ">" in k)
        assert status.shadow.get("same", 0) + changes == 20
        assert [r["candidate"] for r in status.replicas.values()] == [v2, v2]
        assert await cli("status") == 0
        assert f"shadow agreement of {v2}" in capsys.readouterr().out

        # Promote the candidate: both replicas serve it and shadow nothing.
        assert await cli("promote") == 0
        for (server, _), client in zip(servers, clients, strict=True):
            await eventually(lambda s=server: s.host.current.version == v2, timeout_s=30)
            assert (await client.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v2
            assert (await client.model_info()).candidate_version == ""

        # Roll back: both replicas return to v1.
        assert await cli("rollback") == 0
        for (server, _), client in zip(servers, clients, strict=True):
            await eventually(lambda s=server: s.host.current.version == v1, timeout_s=30)
            assert (await client.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v1
        status = rollout_status(sync_redis, layout)
        assert (status.stable, status.candidate, status.history) == (v1, None, [])
        assert {v.version: v.state for v in status.versions} == {v1: "stable", v2: "rolled_back"}
        await eventually(lambda: [r["serving"] for r in rollout_status(sync_redis, layout).replicas.values()]
                         == [v1, v1])  # fmt: skip
        # Nothing earlier to roll back to: refused with a reason, v1 stays.
        assert await cli("rollback") == 2
        assert sync_redis.get(layout.serving_version) == v1.encode()
        assert sync_redis.hmget(layout.model_meta(v1), "state", "reason") == [b"stable", None]
    finally:
        for client in clients:
            await client.close()
        sync_redis.close()


async def _candidate_of(client: AsyncFaultprintClient, version: str) -> bool:
    return (await client.model_info()).candidate_version == version


def test_publishing_refuses_a_model_that_evaluates_worse_unless_forced(  # type: ignore[no-untyped-def]
    artifact_factory, redis_url: str, redis_prefix: str
) -> None:
    layout = RedisLayout(redis_prefix)
    client = connect(redis_url)
    options = EvaluationOptions(trials=2, test_windows_per_condition=10)
    candidates = [artifact_factory(seed=31), artifact_factory(seed=32)]
    scores = {a: evaluate_artifact(a, options).headline() for a in candidates}
    better, worse = sorted(candidates, key=scores.__getitem__, reverse=True)
    assert scores[better] > scores[worse], scores
    publish_gated(client, layout, better, promote_it=True, force=False, options=options)

    with pytest.raises(PublishRefused, match="worse than the stable version"):
        publish_gated(client, layout, worse, promote_it=False, force=False, options=options)
    assert not client.exists(layout.model_meta(worse.name))

    comparison = publish_gated(client, layout, worse, promote_it=False, force=True, options=options)
    assert comparison.worse and comparison.forced
    assert (comparison.candidate_accuracy, comparison.stable_accuracy) == (scores[worse], scores[better])
    assert client.get(layout.candidate_version) == worse.name.encode()
    gate = json.loads(client.hget(layout.model_meta(worse.name), "evaluation_gate"))
    assert gate["forced"] and gate["stable"] == better.name
    client.close()


def test_promotion_validates_the_stored_artifact_first(  # type: ignore[no-untyped-def]
    artifact_factory, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    from faultprint.registry.models import store_artifact

    layout = RedisLayout(redis_prefix)
    client = connect(redis_url)
    version = store_artifact(client, layout, artifact_factory(seed=33)).version
    blob = client.get(layout.model_artifact(version))
    client.set(layout.model_artifact(version), blob[:-100])
    argv = ["promote", version, "--redis-url", redis_url, "--redis-prefix", redis_prefix]
    assert trainer_main(argv) == 2
    assert client.get(layout.serving_version) is None
    client.close()


async def test_a_candidate_no_replica_can_load_is_withdrawn_and_serving_goes_on(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, windows
) -> None:
    from faultprint.registry.models import publish_artifact

    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    v1 = publish_artifact(sync_redis, layout, artifact_factory(seed=51)).version
    server, target = await start_server(model_source="redis", shadow_sample_rate=1.0)
    narrow = publish_artifact(sync_redis, layout, artifact_factory(seed=52, features=100), promote_it=False)
    await eventually(lambda: sync_redis.hget(layout.model_meta(narrow.version), "state") == b"rejected")
    assert b"features" in sync_redis.hget(layout.model_meta(narrow.version), "reason")
    assert sync_redis.get(layout.candidate_version) is None
    assert server.host.candidate is None
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
        assert (await client.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v1
    sync_redis.close()


def test_publishing_scores_every_registered_evaluation_set_and_refuses_a_changed_one(  # type: ignore[no-untyped-def]
    artifact_factory, redis_url: str, redis_prefix: str, tmp_path: Path, capsys
) -> None:
    from faultprint.registry import eval_sets
    from faultprint.traffic.simulator import CONDITIONS
    from faultprint.trainer.networks import labelled_windows
    from faultprint.trainer.publishing import transfer_figure

    layout = RedisLayout(redis_prefix)
    client = connect(redis_url)
    rows = tmp_path / "operator.parquet"
    assert trainer_main(["simulate", "--out", str(rows), "--networks", "island-apac", "--nodes", "2",
                         "--days", "2", "--faults-per-day", "10"]) == 0  # fmt: skip
    stable, candidate = artifact_factory(seed=41), artifact_factory(seed=42)
    argv = ["--redis-url", redis_url, "--redis-prefix", redis_prefix]
    assert trainer_main(["publish", str(stable), "--promote", "--eval-rows", str(rows), *argv]) == 0
    (entry,) = eval_sets.registered(client, layout)
    assert entry.path == str(rows.resolve()) and entry.sha256 == eval_sets.file_sha256(rows)
    assert trainer_main(["eval-sets", *argv]) == 0
    assert str(rows.resolve()) in capsys.readouterr().out

    # The next publish is scored on the registered set without naming it.
    assert trainer_main(["publish", str(candidate), "--force", *argv]) == 0
    gate = json.loads(client.hget(layout.model_meta(candidate.name), "evaluation_gate"))
    (scored,) = gate["eval_sets"]
    cut = labelled_windows([rows], CONDITIONS)  # untrained test models record no conditions: all
    assert scored["path"] == entry.path
    assert scored["stable"] == pytest.approx(transfer_figure(stable, cut))
    assert scored["candidate"] == pytest.approx(transfer_figure(candidate, cut))

    # A registered file that changed stops the gate, unless forced.
    rows.write_bytes(rows.read_bytes() + b"\0")
    third = artifact_factory(seed=43)
    assert trainer_main(["publish", str(third), *argv]) == 3
    assert "changed since it was registered" in capsys.readouterr().err
    assert not client.exists(layout.model_meta(third.name))
    assert trainer_main(["eval-sets", "--remove", str(rows), *argv]) == 0
    assert eval_sets.registered(client, layout) == []
    client.close()
