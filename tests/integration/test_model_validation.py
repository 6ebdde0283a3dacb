"""A model version is checked before it serves: its name, and its embeddings of varied windows."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import redis

from faultprint.client.client import AsyncFaultprintClient
from faultprint.encoder.artifact import ArtifactError, load_tower, read_metadata, sha256_hex
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import RolloutError, promote, publish_artifact, set_candidate, store_artifact
from faultprint.server.model.runner import ModelRunner, RunnerOptions
from faultprint.trainer.__main__ import main as trainer_main
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-v"
# The artifact's probe windows and the embeddings its exporter computed for them.
PROBES = "probes.npz"


def with_broken_weights(artifact: Path, dest: Path, layer: str, kernel: float, bias: float | None = None,
                        probes: str = "drop") -> Path:  # fmt: skip
    """A copy of an artifact whose layer's kernel (and bias) is set to one value, as a training
    run that diverged leaves it. probes: drop the file, or recompute it with the broken tower
    (as the exporter of a diverged run would)."""
    shutil.copytree(artifact, dest)
    tower = load_tower(dest, read_metadata(dest))
    weights = tower.get_layer(layer).get_weights()
    weights[0][...] = kernel
    if bias is not None:
        weights[-1][...] = bias
    tower.get_layer(layer).set_weights(weights)
    tower.save(dest / "encoder.keras")
    if probes == "drop":
        (dest / PROBES).unlink(missing_ok=True)
    else:
        windows = np.load(dest / PROBES)["windows"]
        np.savez(dest / PROBES, windows=windows, embeddings=tower(windows, training=False).numpy())
    return dest


def state_of(client: redis.Redis, layout: RedisLayout, version: str, field: str = "state") -> bytes:
    """A field of the version's registry entry: its rollout state, or the reason for it."""
    return cast(bytes, client.hget(layout.model_meta(version), field) or b"")


def store_by_hand(client: redis.Redis, layout: RedisLayout, artifact: Path, version: str) -> None:
    """Stores an artifact under version as store_artifact would, with its metadata saying so,
    past every check a publisher makes: what anyone who can write to Redis can do."""
    metadata = {**json.loads((artifact / "metadata.json").read_text()), "version": version}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(artifact / "encoder.keras", arcname="encoder.keras")
        data = json.dumps(metadata).encode()
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    client.set(layout.model_artifact(version), blob)
    client.hset(layout.model_meta(version), mapping={"metadata": json.dumps(metadata), "sha256": sha256_hex(blob),
                                                      "published_unix_s": time.time(), "state": "published"})  # fmt: skip
    client.zadd(layout.models, {version: time.time()})


def promote_by_hand(client: redis.Redis, layout: RedisLayout, version: str) -> None:
    """What the promote script writes, by hand."""
    serving = cast(bytes | None, client.get(layout.serving_version))
    if serving is not None:
        client.lpush(layout.history, serving)
        client.hset(layout.model_meta(serving.decode()), "state", "retired")
    client.set(layout.serving_version, version)
    client.hset(layout.model_meta(version), "state", "stable")
    client.xadd(layout.events, {"kind": "model_serving", "version": version, "origin": "attacker"})


@pytest.mark.parametrize("xla", ["off", "auto"])
@pytest.mark.parametrize("probes", ["drop", "recompute"])
def test_a_model_with_nan_weights_is_refused(artifact: Path, tmp_path: Path, xla: str, probes: str) -> None:
    nan = with_broken_weights(artifact, tmp_path / "nan", "lstm_1", np.nan, probes=probes)
    with pytest.raises(ArtifactError, match="not finite") as err:
        ModelRunner(nan, options=RunnerOptions(xla=xla))
    assert read_metadata(nan).version in str(err.value)


def test_a_model_that_embeds_every_window_alike_is_refused(artifact: Path, tmp_path: Path) -> None:
    constant = with_broken_weights(artifact, tmp_path / "c", "embedding", 0.0, bias=0.5)
    with pytest.raises(ArtifactError, match="same embedding"):
        ModelRunner(constant, options=RunnerOptions(xla="off"))


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_a_good_model_passes_with_its_probes_and_without(
    artifact: Path, tmp_path: Path, precision: str
) -> None:
    assert (artifact / PROBES).exists()
    ModelRunner(artifact, options=RunnerOptions(precision=precision, xla="auto"))
    shutil.copytree(artifact, tmp_path / "without")
    (tmp_path / "without" / PROBES).unlink()
    ModelRunner(tmp_path / "without", options=RunnerOptions(precision=precision, xla="auto"))


def test_probes_whose_expected_embeddings_disagree_are_refused(artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    probes = np.load(bad / PROBES)
    # Still finite, varied unit vectors, but each one another window's.
    np.savez(bad / PROBES, windows=probes["windows"], embeddings=np.roll(probes["embeddings"], 1, axis=0))
    with pytest.raises(ArtifactError, match="differ"):
        ModelRunner(bad, options=RunnerOptions(xla="off"))


async def test_a_promoted_version_with_nan_weights_is_rejected_and_serving_goes_on(
    start_server, artifact_factory, artifact, redis_url, redis_prefix, windows, tmp_path: Path
) -> None:
    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    v1 = publish_artifact(sync_redis, layout, artifact_factory(seed=65)).version
    server, target = await start_server(model_source="redis")
    nan = with_broken_weights(artifact, tmp_path / "nan", "lstm_1", np.nan)
    v2 = publish_artifact(sync_redis, layout, nan).version
    await eventually(lambda: state_of(sync_redis, layout, v2) == b"rejected", timeout_s=30)
    assert b"not finite" in state_of(sync_redis, layout, v2, "reason")
    assert sync_redis.get(layout.serving_version) == v1.encode()
    assert server.host.current.version == v1
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
        assert (await client.classify(NET, "pcscf-1", windows("normal", 1, seed=4)[0])).model_version == v1
    sync_redis.close()


async def test_a_served_version_named_dot_dot_deletes_nothing_and_is_rolled_back(
    start_server, artifact, redis_url, redis_prefix, windows, tmp_path: Path
) -> None:
    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    v1 = publish_artifact(sync_redis, layout, artifact).version
    server, target = await start_server(model_source="redis")
    cache_dir = tmp_path / "models-0"  # start_server's cache for its first server
    assert (cache_dir / v1).is_dir()
    (tmp_path / "sentinel").write_text("keep")

    store_by_hand(sync_redis, layout, artifact, "..")
    promote_by_hand(sync_redis, layout, "..")
    await eventually(lambda: state_of(sync_redis, layout, "..") == b"rejected", timeout_s=30)
    assert (tmp_path / "sentinel").read_text() == "keep"
    assert (cache_dir / v1 / "encoder.keras").exists()
    assert b"not a valid id" in state_of(sync_redis, layout, "..", "reason")
    assert sync_redis.get(layout.serving_version) == v1.encode()
    assert server.host.current.version == v1
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
        assert (await client.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v1
    sync_redis.close()


def test_trainer_promote_refuses_a_version_that_is_not_an_id(
    artifact: Path, redis_url: str, redis_prefix: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    # promote downloads into a temporary directory, whose parent '..' names: keep it in tmp_path.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (scratch / "sentinel").write_text("keep")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    layout = RedisLayout(redis_prefix)
    client = connect(redis_url)
    store_by_hand(client, layout, artifact, "..")

    argv = ["promote", "..", "--redis-url", redis_url, "--redis-prefix", redis_prefix]
    assert trainer_main(argv) == 2
    assert "not a valid id" in capsys.readouterr().err
    assert (scratch / "sentinel").read_text() == "keep"
    assert client.get(layout.serving_version) is None
    for move in (promote, set_candidate):
        with pytest.raises(RolloutError, match="not a valid id"):
            move(client, layout, "..")
    assert client.get(layout.serving_version) is None and client.get(layout.candidate_version) is None
    client.close()


def test_trainer_promote_refuses_a_version_with_nan_weights(
    artifact: Path, redis_url: str, redis_prefix: str, tmp_path: Path, capsys
) -> None:
    layout = RedisLayout(redis_prefix)
    client = connect(redis_url)
    nan = with_broken_weights(artifact, tmp_path / "nan", "lstm_1", np.nan)
    version = store_artifact(client, layout, nan).version
    argv = ["promote", version, "--redis-url", redis_url, "--redis-prefix", redis_prefix]
    assert trainer_main(argv) == 2
    assert "not finite" in capsys.readouterr().err
    assert client.get(layout.serving_version) is None
    client.close()


async def test_a_version_whose_encoder_file_is_corrupt_is_rejected_as_corrupt(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, tmp_path: Path
) -> None:
    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    v1 = publish_artifact(sync_redis, layout, artifact_factory(seed=71)).version
    server, _ = await start_server(model_source="redis")
    corrupt = shutil.copytree(artifact_factory(seed=72), tmp_path / "corrupt")
    (corrupt / "encoder.keras").write_bytes(b"not a keras archive" * 100)
    v2 = publish_artifact(sync_redis, layout, corrupt, promote_it=False).version
    await eventually(lambda: state_of(sync_redis, layout, v2) == b"rejected", timeout_s=30)
    reason = state_of(sync_redis, layout, v2, "reason").decode()
    assert "encoder.keras" in reason and "corrupt" in reason and "File not found" not in reason
    assert server.host.current.version == v1 and server.host.candidate is None
    sync_redis.close()
