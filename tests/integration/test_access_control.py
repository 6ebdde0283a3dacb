"""TLS, mutual TLS and the access policy through the real client and a real server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from faultprint.client import ErrorDetails, details
from faultprint.client.channels import ChannelSecurity, aio_channel
from faultprint.client.client import AsyncFaultprintClient, StreamItem, minutes_request
from faultprint.server.app import StartupError
from faultprint.traffic.catalogue import NUM_FEATURES
from tests.certificates import TestAuthority

pytestmark = pytest.mark.integration

OWN, OTHER = "net-own", "net-other"
TOKENS = {"probe": "probe-secret", "operator": "operator-secret", "admin": "admin-secret"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _policy(path: Path, extra: str = "") -> Path:
    path.write_text(
        f"""
[[caller]]
name = "probe-own"
role = "probe"
networks = ["{OWN}"]
token_sha256 = ["{_digest(TOKENS["probe"])}"]
certificate_names = ["probe-own.example"]

[[caller]]
name = "operator-own"
role = "operator"
networks = ["{OWN}"]
token_sha256 = ["{_digest(TOKENS["operator"])}"]

[[caller]]
name = "admin"
role = "admin"
networks = ["*"]
token_sha256 = ["{_digest(TOKENS["admin"])}"]
{extra}"""
    )
    return path


def _code(error: BaseException) -> grpc.StatusCode:
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error.code()


@pytest.fixture
def authority(tmp_path: Path) -> TestAuthority:
    return TestAuthority(tmp_path / "pki")


async def test_tls_serves_a_client_that_trusts_its_authority_and_refuses_plaintext(
    start_server, artifact, authority
) -> None:  # type: ignore[no-untyped-def]
    issued = authority.server()
    _, target = await start_server(
        model_source=str(artifact), tls_cert_file=str(issued.cert), tls_key_file=str(issued.key)
    )
    async with AsyncFaultprintClient(target, security=ChannelSecurity(ca_file=str(authority.ca))) as client:
        assert (await client.model_info()).model_version
    async with AsyncFaultprintClient(target, security=ChannelSecurity(), timeout_s=3) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await plain.model_info()
    assert _code(refused.value) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_certificate_from_the_configured_authority(
    start_server, artifact, authority, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    issued = authority.server()
    _, target = await start_server(
        model_source=str(artifact), tls_cert_file=str(issued.cert), tls_key_file=str(issued.key),
        tls_client_ca_file=str(authority.ca),
    )  # fmt: skip
    probe = authority.client("probe-own.example")
    stranger = TestAuthority(tmp_path / "other-pki").client("probe-own.example")
    trusted = ChannelSecurity(ca_file=str(authority.ca), cert_file=str(probe.cert), key_file=str(probe.key))
    async with AsyncFaultprintClient(target, security=trusted) as client:
        assert (await client.model_info()).model_version
    for security in (
        ChannelSecurity(ca_file=str(authority.ca)),
        ChannelSecurity(ca_file=str(authority.ca), cert_file=str(stranger.cert), key_file=str(stranger.key)),
    ):
        async with AsyncFaultprintClient(target, security=security, timeout_s=3) as client:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.model_info()
        assert _code(refused.value) == grpc.StatusCode.UNAVAILABLE


async def test_orchestrators_check_health_in_plaintext_on_a_port_of_its_own(
    start_server, artifact, authority
) -> None:  # type: ignore[no-untyped-def]
    issued = authority.server()
    server, _ = await start_server(
        model_source=str(artifact), tls_cert_file=str(issued.cert), tls_key_file=str(issued.key),
        tls_client_ca_file=str(authority.ca), health_listen_address="127.0.0.1:0",
    )  # fmt: skip
    async with aio_channel(f"127.0.0.1:{server.health_port}", [], ChannelSecurity()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "faultprint.v1.ProbeService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # nothing but health on that port
            await AsyncFaultprintClient(
                f"127.0.0.1:{server.health_port}", security=ChannelSecurity()
            ).model_info()
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        stopping = asyncio.create_task(server.stop(drain_s=1.0))
        await asyncio.sleep(0.3)
        answer = await health.Check(health_pb2.HealthCheckRequest(service="faultprint.v1.ProbeService"))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING  # the drain shows there too
        await stopping


async def test_a_replaced_server_certificate_serves_new_connections_without_a_restart(
    start_server, artifact, authority, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    issued = authority.server()
    _, target = await start_server(
        model_source=str(artifact), tls_cert_file=str(issued.cert), tls_key_file=str(issued.key)
    )
    renewed_by = TestAuthority(tmp_path / "renewed-pki")
    renewed = renewed_by.server()
    shutil.copy(renewed.key, issued.key)
    shutil.copy(renewed.cert, issued.cert)
    security = ChannelSecurity(ca_file=str(renewed_by.ca))
    async with AsyncFaultprintClient(target, security=security, own_connection=True) as client:
        assert (await client.model_info()).model_version
    old = ChannelSecurity(ca_file=str(authority.ca))
    async with AsyncFaultprintClient(target, security=old, own_connection=True, timeout_s=3) as client:
        with pytest.raises(grpc.aio.AioRpcError):
            await client.model_info()


@pytest.fixture
async def guarded(start_server, artifact, authority, tmp_path, windows):  # type: ignore[no-untyped-def]
    """A mutual-TLS-optional server under the access policy, with a normal case in each network."""
    issued = authority.server()
    policy = _policy(tmp_path / "access.toml")
    _, target = await start_server(
        model_source=str(artifact), tls_cert_file=str(issued.cert), tls_key_file=str(issued.key),
        access_policy_file=str(policy),
    )  # fmt: skip
    async with _client(target, authority, "admin") as admin:
        for network in (OWN, OTHER):
            await admin.create_reference_case(network, "normal", [windows("normal", 1, 1)[0]], case_id="n1")
    return target, policy


def _client(target: str, authority: TestAuthority, role: str | None) -> AsyncFaultprintClient:
    token = TOKENS[role] if role else ""
    return AsyncFaultprintClient(target, security=ChannelSecurity(ca_file=str(authority.ca), token=token))


async def test_a_caller_without_credentials_may_only_check_health(guarded, authority) -> None:  # type: ignore[no-untyped-def]
    target, _ = guarded
    async with _client(target, authority, None) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await anonymous.model_info()
        assert _code(refused.value) == grpc.StatusCode.UNAUTHENTICATED
        assert "no credentials" in refused.value.details()
        assert details(refused.value).reason == "NO_CREDENTIALS"
        health = health_pb2_grpc.HealthStub(anonymous.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service="faultprint.v1.ProbeService"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    wrong = ChannelSecurity(ca_file=str(authority.ca), token="guessed")
    async with AsyncFaultprintClient(target, security=wrong) as guesser:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await guesser.model_info()
        assert _code(refused.value) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_probe_sends_and_reads_only_its_networks_and_changes_no_case(
    guarded, authority, windows
) -> None:  # type: ignore[no-untyped-def]
    target, _ = guarded
    window = windows("normal", 1, 2)[0]
    async with _client(target, authority, "probe") as probe:
        assert (await probe.classify(OWN, "pcscf-1", window)).label == "normal"
        for attempt in (
            probe.classify(OTHER, "pcscf-1", window),
            probe.node_diagnosis(OTHER, "pcscf-1"),
            probe.create_reference_case(OWN, "normal", [window]),
            probe.delete_reference_case(OWN, "n1"),
            probe.open_incidents(OWN),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await attempt
            assert _code(refused.value) == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
        assert "probe-own" in refused.value.details()
        assert details(refused.value) == ErrorDetails("ROLE_NOT_ALLOWED")
    async with _client(target, authority, "admin") as admin:
        cases = [await admin.get_reference_case(n, "n1") for n in (OWN, OTHER)]
    assert [c.label for c in cases] == ["normal", "normal"]


async def test_streamed_windows_and_minutes_of_another_network_are_refused_one_by_one(
    guarded, authority, windows
) -> None:  # type: ignore[no-untyped-def]
    target, _ = guarded
    window = windows("normal", 1, 3)[0]

    async def items():  # type: ignore[no-untyped-def]
        yield StreamItem(OWN, "pcscf-1", window, sequence=1)
        yield StreamItem(OTHER, "pcscf-1", window, sequence=2)

    async with _client(target, authority, "probe") as probe:
        answers = {a.sequence: a async for a in probe.classify_stream(items())}
        assert answers[1].diagnosis.label == "normal"
        assert answers[2].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        call = probe.stream_minutes()
        rows = np.ones((2, NUM_FEATURES), np.float32)
        request = minutes_request(1, OWN, ["pcscf-1", "pcscf-2"], [29_000_000, 29_000_000], rows)
        request.minutes[1].network = OTHER
        await call.write(request)
        ack = await call.read()
        await call.done_writing()
    assert ack.accepted == 1
    assert [(r.index, r.code) for r in ack.refused] == [(1, grpc.StatusCode.PERMISSION_DENIED.value[0])]


async def test_an_operator_manages_its_own_networks_only(guarded, authority, windows) -> None:  # type: ignore[no-untyped-def]
    target, _ = guarded
    async with _client(target, authority, "operator") as operator:
        await operator.create_reference_case(OWN, "normal", [windows("normal", 1, 4)[0]], case_id="n2")
        assert len(await operator.open_incidents(OWN)) == 0
        for attempt in (
            operator.delete_reference_case(OTHER, "n1"),
            anext(aiter(operator.watch_incidents())),  # every network's events
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await attempt
            assert _code(refused.value) == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
    async with _client(target, authority, "admin") as admin:
        assert (await admin.get_reference_case(OTHER, "n1")).label == "normal"


async def test_a_client_certificate_names_its_caller(start_server, artifact, authority, tmp_path) -> None:  # type: ignore[no-untyped-def]
    issued = authority.server()
    _, target = await start_server(
        model_source=str(artifact), tls_cert_file=str(issued.cert), tls_key_file=str(issued.key),
        tls_client_ca_file=str(authority.ca), access_policy_file=str(_policy(tmp_path / "access.toml")),
    )  # fmt: skip
    probe = authority.client("probe-own.example")
    unnamed = authority.client("someone-else.example")

    def security(issued_to):  # type: ignore[no-untyped-def]
        return ChannelSecurity(
            ca_file=str(authority.ca), cert_file=str(issued_to.cert), key_file=str(issued_to.key)
        )

    async with AsyncFaultprintClient(target, security=security(probe)) as client:
        assert (await client.model_info()).model_version
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.open_incidents(OWN)
        assert _code(refused.value) == grpc.StatusCode.PERMISSION_DENIED
    async with AsyncFaultprintClient(target, security=security(unnamed)) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.model_info()
        assert _code(refused.value) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_changed_policy_applies_without_a_restart_and_a_broken_one_is_not_taken(
    guarded, authority
) -> None:  # type: ignore[no-untyped-def]
    target, policy = guarded
    newcomer = f"""
[[caller]]
name = "probe-new"
role = "probe"
networks = ["{OTHER}"]
token_sha256 = ["{_digest("new-secret")}"]
"""
    security = ChannelSecurity(ca_file=str(authority.ca), token="new-secret")
    async with AsyncFaultprintClient(target, security=security) as client:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:  # before the policy names it
            await client.node_diagnosis(OTHER, "pcscf-9")
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
        _policy(policy, newcomer)
        codes = []
        for _ in range(40):  # the file is looked at once a second
            with pytest.raises(grpc.aio.AioRpcError) as answer:  # admitted, the node has no diagnosis
                await client.node_diagnosis(OTHER, "pcscf-9")
            codes.append(answer.value.code())
            if codes[-1] != grpc.StatusCode.UNAUTHENTICATED:
                break
            await asyncio.sleep(0.1)
        assert codes[-1] == grpc.StatusCode.NOT_FOUND
        policy.write_text("[[caller]\nbroken")
        await asyncio.sleep(1.5)
        with pytest.raises(grpc.aio.AioRpcError) as still_known:
            await client.node_diagnosis(OTHER, "pcscf-9")
        assert still_known.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_can_be_turned_off(start_server, artifact) -> None:  # type: ignore[no-untyped-def]
    _, target = await start_server(model_source=str(artifact), reflection=False)
    async with aio_channel(target, [], ChannelSecurity()) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_broken_policy_or_missing_certificate_stops_start_up_with_the_reason(
    start_server, artifact, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "access.toml"
    broken.write_text('[[caller]]\nname = "x"\nrole = "root"\nnetworks = ["*"]\ntoken_sha256 = []\n')
    with pytest.raises(StartupError, match="role is 'root'"):
        await start_server(model_source=str(artifact), access_policy_file=str(broken))
    with pytest.raises(StartupError, match="cannot read TLS file"):
        await start_server(
            model_source=str(artifact),
            tls_cert_file=str(tmp_path / "no.crt"),
            tls_key_file=str(tmp_path / "no.key"),
        )
