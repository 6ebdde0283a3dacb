"""Signed model versions: a replica holding trusted keys serves what the trainer signed, and refuses
an unsigned, untrusted or altered version the way it refuses a corrupt one."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.launcher import ROOT
from faultprint.client.client import AsyncFaultprintClient
from faultprint.encoder.artifact import METADATA_FILE, pack_artifact, read_metadata, sha256_hex
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import promote, publish_artifact, store_artifact
from faultprint.registry.signing import (
    KEY_ID_FIELD,
    SIGNATURE_FIELD,
    SignatureError,
    generate_key_pair,
    load_private_key,
    sign_directory,
)
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-signed"
UNCHECKED = "model signatures are not checked"


@dataclass(frozen=True)
class Keys:
    """A key pair the replicas trust and one they do not."""

    private: Path
    public: Path
    other_private: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    private, public, _ = generate_key_pair(tmp_path / "trusted")
    other, _, _ = generate_key_pair(tmp_path / "other")
    return Keys(private, public, other)


async def test_a_signed_version_serves_and_unsigned_or_untrusted_ones_are_rejected(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, windows, keys, caplog
) -> None:
    caplog.set_level(logging.INFO)
    layout = RedisLayout(redis_prefix)
    sync_redis = connect(redis_url)
    signing_key = load_private_key(keys.private)
    v1 = publish_artifact(sync_redis, layout, artifact_factory(seed=31), signing_key=signing_key).version
    server, target = await start_server(model_source="redis", model_trusted_keys=str(keys.public))
    assert server.host.current.version == v1
    assert UNCHECKED not in caplog.text
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])

        async def refused(version: str, why: str) -> None:
            meta = layout.model_meta(version)
            await eventually(lambda: sync_redis.hget(meta, "state") == b"rejected", timeout_s=30)
            assert why in sync_redis.hget(meta, "reason").decode()
            assert f"rejected model version {version}, still serving {v1}" in caplog.text
            assert server.host.current.version == v1
            assert (await client.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v1

        unsigned = store_artifact(sync_redis, layout, artifact_factory(seed=32)).version
        promote(sync_redis, layout, unsigned)
        await refused(unsigned, f"model version {unsigned} is unsigned")
        assert sync_redis.get(layout.serving_version) == v1.encode()  # rolled back

        other_key = load_private_key(keys.other_private)
        untrusted = publish_artifact(
            sync_redis, layout, artifact_factory(seed=33), signing_key=other_key
        ).version
        await refused(untrusted, "is signed by unknown key id")
        assert sync_redis.get(layout.serving_version) == v1.encode()

        # An unsigned candidate is withdrawn before it is loaded to shadow.
        candidate = publish_artifact(sync_redis, layout, artifact_factory(seed=34), promote_it=False).version
        await refused(candidate, "is unsigned")
        assert sync_redis.get(layout.candidate_version) is None and server.host.candidate is None

        v2 = publish_artifact(sync_redis, layout, artifact_factory(seed=35), signing_key=signing_key).version
        await eventually(lambda: server.host.current.version == v2, timeout_s=30)
        assert (await client.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v2
    assert f"model version {v2} is signed by trusted key" in caplog.text
    sync_redis.close()


async def test_versions_an_attacker_writes_with_a_bare_redis_client_are_refused(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, windows, keys, tmp_path
) -> None:
    layout = RedisLayout(redis_prefix)
    signing_key = load_private_key(keys.private)
    trainer = connect(redis_url)
    v1 = publish_artifact(trainer, layout, artifact_factory(seed=41), signing_key=signing_key).version
    signed = store_artifact(trainer, layout, artifact_factory(seed=42), signing_key=signing_key).version
    trainer.close()
    server, target = await start_server(model_source="redis", model_trusted_keys=str(keys.public))
    attacker = connect(redis_url)
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
        # Another model packed under a signed version's name, its sha256 rewritten to match.
        swapped = _renamed(artifact_factory(seed=43), signed, tmp_path / "swapped")
        blob = pack_artifact(swapped)
        attacker.set(layout.model_artifact(signed), blob)
        attacker.hset(layout.model_meta(signed), "sha256", sha256_hex(blob))
        promote(attacker, layout, signed)
        await eventually(
            lambda: attacker.hget(layout.model_meta(signed), "state") == b"rejected", timeout_s=30
        )
        assert b"bad signature" in attacker.hget(layout.model_meta(signed), "reason")
        assert attacker.get(layout.serving_version) == v1.encode()
        assert server.host.current.version == v1

        # A new version written key by key, with v1's signature copied onto it, and served by hand.
        fake_dir = artifact_factory(seed=44)
        fake, blob = read_metadata(fake_dir).version, pack_artifact(fake_dir)
        stolen = attacker.hmget(layout.model_meta(v1), [SIGNATURE_FIELD, KEY_ID_FIELD])
        attacker.set(layout.model_artifact(fake), blob)
        attacker.hset(layout.model_meta(fake), mapping={
            "metadata": (fake_dir / METADATA_FILE).read_text(), "sha256": sha256_hex(blob), "state": "stable",
            SIGNATURE_FIELD: stolen[0], KEY_ID_FIELD: stolen[1],
        })  # fmt: skip
        attacker.zadd(layout.models, {fake: 0})
        attacker.set(layout.serving_version, fake)
        attacker.xadd(layout.events, {"kind": "model_serving", "version": fake, "origin": "attacker"})
        await eventually(lambda: attacker.hget(layout.model_meta(fake), "state") == b"rejected", timeout_s=30)
        assert b"bad signature" in attacker.hget(layout.model_meta(fake), "reason")
        assert server.host.current.version == v1
        assert (await client.classify(NET, "pcscf-1", windows("normal", 1)[0])).model_version == v1
    attacker.close()


def _renamed(artifact: Path, version: str, out: Path) -> Path:
    """A copy of artifact whose metadata names version."""
    shutil.copytree(artifact, out)
    metadata = json.loads((out / METADATA_FILE).read_text())
    (out / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}))
    return out


async def test_without_trusted_keys_nothing_is_checked_and_start_up_warns_once(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_url, redis_prefix, caplog
) -> None:
    caplog.set_level(logging.WARNING)
    client = connect(redis_url)
    unsigned = publish_artifact(client, RedisLayout(redis_prefix), artifact_factory(seed=51)).version
    client.close()
    server, _ = await start_server(model_source="redis")
    assert server.host.current.version == unsigned
    assert [r.getMessage() for r in caplog.records].count(
        "no trusted keys (--model-trusted-keys): model signatures are not checked, so whoever can write to "
        "Redis decides which model this replica serves"
    ) == 1


async def test_an_artifact_directory_serves_only_with_a_signature_a_trusted_key_made(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, keys
) -> None:
    signed = artifact_factory(seed=61)
    sign_directory(signed, load_private_key(keys.private))
    server, _ = await start_server(model_source=str(signed), model_trusted_keys=str(keys.public))
    assert server.host.current.version == signed.name

    (signed / "encoder.keras").write_bytes((signed / "encoder.keras").read_bytes() + b"\0")
    with pytest.raises(SignatureError, match="bad signature"):
        await start_server(model_source=str(signed), model_trusted_keys=str(keys.public))
    by_another = artifact_factory(seed=62)
    sign_directory(by_another, load_private_key(keys.other_private))
    with pytest.raises(SignatureError, match="signed by unknown key id"):
        await start_server(model_source=str(by_another), model_trusted_keys=str(keys.public))


async def test_a_trusted_key_that_cannot_be_read_stops_start_up(  # type: ignore[no-untyped-def]
    start_server, artifact, keys, tmp_path
) -> None:
    from faultprint.server.app import StartupError

    missing = tmp_path / "missing.pub.pem"
    with pytest.raises(StartupError, match=re.escape(f"cannot read the trusted key {missing}: ")) as caught:
        await start_server(model_source=str(artifact), model_trusted_keys=f"{keys.public},{missing}")
    assert str(caught.value).endswith("; fix --model-trusted-keys")
    with pytest.raises(StartupError, match=re.escape(f"cannot read the trusted key {keys.private}: ")):
        await start_server(model_source=str(artifact), model_trusted_keys=str(keys.private))


def test_an_unsigned_artifact_directory_stops_start_up_with_the_reason(  # type: ignore[no-untyped-def]
    artifact_factory, redis_url, keys
) -> None:
    unsigned = artifact_factory(seed=63)
    done = subprocess.run(
        [sys.executable, "-m", "faultprint.server", "--xla", "off", "--listen-address", "127.0.0.1:0",
         "--model-source", str(unsigned)],
        env={**os.environ, "REDIS_URL": redis_url, "FAULTPRINT_MODEL_TRUSTED_KEYS": str(keys.public)},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot serve model {unsigned}: model version {unsigned.name} is unsigned" in done.stderr
    assert "Traceback" not in done.stderr
