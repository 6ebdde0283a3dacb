"""A replica and the trainer against a Redis that requires the ACL users docs/security.md gives them,
and against a Redis that speaks only TLS and asks for a client certificate."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import redis

from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import promote, store_artifact
from faultprint.registry.signing import generate_key_pair
from tests.certificates import TestAuthority
from tests.integration.support import PrivateRedis, RedisTls, eventually, needs_redis_server
from tests.integration.test_rollout import registry_cli

pytestmark = [pytest.mark.integration, needs_redis_server]

ROOT = Path(__file__).resolve().parents[2]
NET = "net-acl"
SERVER, TRAINER = "faultprint-server", "faultprint-trainer"


def documented_users(prefix: str, passwords: dict[str, str]) -> str:
    """The `user` lines of docs/security.md's Redis section, for this prefix and these passwords."""
    section = (ROOT / "docs" / "security.md").read_text().split("## Redis: ACL users and TLS", 1)[1]
    lines = [line for line in section.split("```", 2)[1].splitlines() if line.startswith("user ")]
    assert [line.split()[1] for line in lines] == ["default", SERVER, TRAINER]
    text = "\n".join(lines).replace("~{faultprint", "~{" + prefix)
    for user, password in passwords.items():
        text = text.replace(f">{user.removeprefix('faultprint-').upper()}_PASSWORD", f">{password}")
    return text + "\n"


async def test_a_replica_and_the_trainer_work_as_the_documented_acl_users(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_prefix, windows, tmp_path, capsys
) -> None:
    passwords = {SERVER: secrets.token_urlsafe(12), TRAINER: secrets.token_urlsafe(12)}
    users = tmp_path / "users.acl"
    users.write_text(documented_users(redis_prefix, passwords))
    (tmp_path / "redis").mkdir()
    private = PrivateRedis(tmp_path / "redis", aof=False, options=["--aclfile", str(users)],
                           login=(TRAINER, passwords[TRAINER]))  # fmt: skip
    await private.start()
    server_url = private.url_for(SERVER, passwords[SERVER])
    signing_key, trusted, _ = generate_key_pair(tmp_path / "keys")
    layout = RedisLayout(redis_prefix)
    trainer = redis.Redis.from_url(private.url)
    as_server = redis.Redis.from_url(server_url)
    try:
        cli = registry_cli(private.url, redis_prefix)
        first = artifact_factory(seed=71)
        assert (
            await cli("publish", str(first), "--promote", "--force", "--signing-key", str(signing_key)) == 0
        )
        server, target = await start_server(model_source="redis", redis_url=server_url,
                                            model_trusted_keys=str(trusted))  # fmt: skip
        assert server.host.current.version == first.name
        async with AsyncFaultprintClient(target) as client:
            await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
            diagnosis = await client.classify(NET, "pcscf-1", windows("normal", 1, seed=2)[0])
            assert (diagnosis.label, diagnosis.model_version) == ("normal", first.name)

            # The replica rejects an unsigned version and rolls the registry back as its own user.
            unsigned = store_artifact(trainer, layout, artifact_factory(seed=72)).version
            promote(trainer, layout, unsigned)
            await eventually(lambda: trainer.hget(layout.model_meta(unsigned), "state") == b"rejected", 30)
            assert trainer.get(layout.serving_version) == first.name.encode()
            assert server.host.current.version == first.name
        capsys.readouterr()
        assert await cli("status") == 0
        assert f"{first.name:<28} stable" in capsys.readouterr().out

        # What the users may not do: other keys, administration, and no login at all.
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_server.set("another-deployment:model:serving", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            trainer.get("another-deployment:model:serving")
        for command in (("FLUSHALL",), ("CONFIG", "GET", "dir"), ("KEYS", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_server.execute_command(*command)
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(private.url_for()).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(private.url_for(SERVER, "wrong")).ping()
    finally:
        trainer.close()
        as_server.close()
        private.kill()


async def test_a_replica_and_the_trainer_work_over_tls_with_a_client_certificate(  # type: ignore[no-untyped-def]
    start_server, artifact_factory, redis_prefix, windows, tmp_path, capsys
) -> None:
    authority = TestAuthority(tmp_path / "pki")
    served, client_cert = authority.server(), authority.client("faultprint")
    tls = RedisTls(authority.ca, served.cert, served.key, client_cert.cert, client_cert.key)
    (tmp_path / "redis").mkdir()
    private = PrivateRedis(tmp_path / "redis", aof=False, tls=tls)
    await private.start()
    assert private.url.startswith("rediss://") and "ssl_certfile=" in private.url
    try:
        cli = registry_cli(private.url, redis_prefix)
        first = artifact_factory(seed=81)
        assert await cli("publish", str(first), "--promote", "--force") == 0
        server, target = await start_server(model_source="redis", redis_url=private.url)
        assert server.host.current.version == first.name
        async with AsyncFaultprintClient(target) as client:
            await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
            diagnosis = await client.classify(NET, "pcscf-1", windows("normal", 1, seed=2)[0])
            assert diagnosis.model_version == first.name
        capsys.readouterr()
        assert await cli("status") == 0
        assert f"{first.name:<28} stable" in capsys.readouterr().out

        # Redis speaks nothing else: no plaintext, and no TLS client without a certificate.
        plain = f"redis://127.0.0.1:{private.port}/0"
        no_certificate = f"rediss://127.0.0.1:{private.port}/0?ssl_ca_certs={authority.ca}"
        for url in (plain, no_certificate):
            with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                redis.Redis.from_url(url, socket_timeout=5).ping()
    finally:
        private.kill()
