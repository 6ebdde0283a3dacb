"""Hostile and malformed input through a real server on loopback: a clear status, nothing stored, serving goes on."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
import redis

from faultprint.client import ErrorDetails, details
from faultprint.client.client import AsyncFaultprintClient, FaultprintClient, encode_window
from faultprint.registry.connection import connect
from faultprint.registry.ids import is_valid_id
from faultprint.registry.layout import RedisLayout
from faultprint.v1 import (
    model_service_pb2,
    probe_service_pb2,
    probe_service_pb2_grpc,
    reference_case_service_pb2,
)
from tests.integration.support import PrivateRedis

pytestmark = pytest.mark.integration

NET = "net-h"
# Not a protobuf message: a tag with wire type 7, which does not exist.
GARBAGE = b"\xff\xff\xff\xff\x0f"


@pytest.fixture
async def served(start_server, artifact, windows):  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(artifact), stream_max_unanswered=8)
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]], case_id="base")
        yield server, target, client


def _key_ids(redis_url: str, prefix: str) -> list[str]:
    """Every id-like part of every key the deployment wrote."""
    client = connect(redis_url)
    keys = [k.decode() for pattern in RedisLayout(prefix).patterns() for k in client.scan_iter(pattern)]
    client.close()
    return [part for key in keys for part in key.replace("{", "").replace("}", "").split(":")[1:]]


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


async def test_bad_node_and_network_ids_are_refused_and_never_reach_redis(served, windows, redis_url) -> None:  # type: ignore[no-untyped-def]
    server, _, client = served
    good = windows("normal", 1, seed=1)[0]
    for node in ("a:b", "x\n", "bad node", "n" * (1 << 20), "..", "é"):
        error = await _refused(client.classify(NET, node, good))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, node[:20]
        assert "is not a valid id" in error.details()
        assert len(error.details()) < 300  # a 1 MB id is not echoed back
    lookup = model_service_pb2.GetNodeDiagnosisRequest(network="metro-eu:a", node="b")
    error = await _refused(client.model.GetNodeDiagnosis(lookup))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "network 'metro-eu:a'" in error.details()
    await server.writer.flush()
    assert all(is_valid_id(part) for part in _key_ids(redis_url, server.settings.redis_prefix))
    assert (await client.classify(NET, "pcscf-1", good)).label == "normal"


async def test_an_id_of_20_kb_is_invalid_argument_not_resource_exhausted(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    long_id = "x" * 20_000
    one = [windows("normal", 1)[0]]
    for call in (
        client.create_reference_case(long_id, "normal", one),
        client.create_reference_case(NET, long_id, one),
        client.classify(long_id, "n", one[0]),
        client.references.GetReferenceCase(
            reference_case_service_pb2.GetReferenceCaseRequest(network=NET, reference_case_id=long_id)
        ),
    ):
        error = await _refused(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "(20000 characters)" in error.details()


async def test_descriptions_are_bounded_and_listing_keeps_working(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    one = [windows("normal", 1)[0]]
    error = await _refused(client.create_reference_case(NET, "normal", one, description="d" * (8 << 20)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 2048" in error.details()
    await client.create_reference_case(NET, "normal", one, description="d" * 2048, case_id="long-note")
    listed = await client.references.ListReferenceCases(
        reference_case_service_pb2.ListReferenceCasesRequest(network=NET)
    )
    assert [c.reference_case_id for c in listed.reference_cases] == ["base", "long-note"]


async def test_both_packed_values_and_values_is_refused(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    good = windows("normal", 1)[0]
    both = encode_window(good)
    both.values.extend(good.ravel().tolist())
    request = probe_service_pb2.ClassifyWindowRequest(network=NET, node="n", window=both)
    error = await _refused(client.probe.ClassifyWindow(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "set exactly one" in error.details()


async def test_refusals_name_the_field_and_reason_in_their_status_details(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, target, client = served
    good = windows("normal", 2)
    short = encode_window(good[1][:30])
    request = reference_case_service_pb2.CreateReferenceCaseRequest(
        network=NET, label="normal", windows=[encode_window(good[0]), short], request_id="r1"
    )
    error = await _refused(client.references.CreateReferenceCase(request))
    found = details(error)
    assert (found.reason, found.field) == ("WINDOW_SHAPE", "windows[1]")
    assert found.violations == (("windows[1]", error.details()),)
    error = await _refused(client.classify("bad net!", "n", good[0]))
    assert details(error) == ErrorDetails("INVALID_ID", "network", (("network", error.details()),))
    error = await _refused(client.classify(NET, "n", good[0], top_k=10_000))
    assert details(error).field == "top_k"
    error = await _refused(client.delete_reference_case(NET, "no-such-case"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert details(error) == ErrorDetails("UNKNOWN_CASE")  # no field violation outside INVALID_ARGUMENT

    def sync_side() -> ErrorDetails:  # the blocking client's errors carry the same details
        with FaultprintClient(target) as blocking:
            try:
                blocking.classify("other-net", "n", good[0])
            except grpc.RpcError as refused:
                return details(refused)
        raise AssertionError("not refused")

    assert await asyncio.to_thread(sync_side) == ErrorDetails("UNKNOWN_NETWORK", "network")


async def test_undecodable_bytes_are_invalid_argument(served) -> None:  # type: ignore[no-untyped-def]
    _, target, _ = served
    async with grpc.aio.insecure_channel(target) as channel:
        for method in (
            "/faultprint.v1.ProbeService/ClassifyWindow",
            "/faultprint.v1.ReferenceCaseService/CreateReferenceCase",
            "/faultprint.v1.ModelService/GetNodeDiagnosis",
        ):
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            error = await _refused(call(GARBAGE, timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "is not a valid faultprint.v1." in error.details()
            assert details(error).reason == "UNDECODABLE_REQUEST"


async def test_an_undecodable_stream_message_ends_the_stream_after_the_answers_due(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, target, _ = served
    good = probe_service_pb2.StreamClassifyWindowsRequest(
        sequence=7, network=NET, node="n", window=encode_window(windows("normal", 1, seed=2)[0])
    )
    async with grpc.aio.insecure_channel(target) as channel:
        stream = channel.stream_stream(
            "/faultprint.v1.ProbeService/StreamClassifyWindows",
            request_serializer=None,
            response_deserializer=probe_service_pb2.StreamClassifyWindowsResponse.FromString,
        )
        call = stream(iter([good.SerializeToString(), GARBAGE]), timeout=30)
        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for answer in call:
                answers.append(answer)
    assert [a.sequence for a in answers] == [7] and answers[0].diagnosis.label == "normal"
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "StreamClassifyWindowsRequest" in err.value.details()


async def test_a_stream_that_never_reads_its_answers_stops_being_read(served, windows) -> None:  # type: ignore[no-untyped-def]
    """With stream_max_unanswered = 8 the server holds at most 8 of the stream's windows
    (read, answer unwritten) once the caller's flow-control window is full of unread
    answers, and reads no more; every answer still comes once the caller reads.
    The caller's window is kept small (1 kB, no growth) so that it fills with a few answers."""
    server, target, _ = served
    window = encode_window(windows("normal", 1, seed=3)[0])
    sent = 200
    small_window = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    async with grpc.aio.insecure_channel(target, options=small_window) as channel:
        stream = probe_service_pb2_grpc.ProbeServiceStub(channel).StreamClassifyWindows(timeout=60)

        async def send() -> None:
            for i in range(sent):
                await stream.write(
                    probe_service_pb2.StreamClassifyWindowsRequest(
                        sequence=i, network=NET, node="n", window=window
                    )
                )
            await stream.done_writing()

        sender = asyncio.create_task(send())
        most_held = 0
        for _ in range(40):  # two seconds of not reading
            await asyncio.sleep(0.05)
            most_held = max(most_held, server.probes.unanswered)
        assert most_held == 8
        # The server stopped reading: the rest wait in the transport's flow-control windows.
        assert server.probes.stream_windows_read < 40
        sequences = [answer.sequence async for answer in stream]
        await sender
    assert sorted(sequences) == list(range(sent))
    assert server.probes.unanswered == 0


async def test_a_retried_enrolment_with_one_request_id_creates_one_case(
    start_server, artifact, windows
) -> None:  # type: ignore[no-untyped-def]
    """A retry that lands on another replica, after the first attempt was stored, returns
    the same case; both replicas index it."""
    _, first = await start_server(model_source=str(artifact))
    _, second = await start_server(model_source=str(artifact))
    one = [windows("hss_unreachable", 1, seed=4)[0]]
    async with AsyncFaultprintClient(first) as a, AsyncFaultprintClient(second) as b:
        created = await a.create_reference_case(NET, "hss_unreachable", one, request_id="req-1")
        retried = await b.create_reference_case(NET, "hss_unreachable", one, request_id="req-1")
        assert retried.reference_case_id == created.reference_case_id
        assert retried.create_time == created.create_time
        listed = await b.references.ListReferenceCases(
            reference_case_service_pb2.ListReferenceCasesRequest(network=NET)
        )
        assert [c.reference_case_id for c in listed.reference_cases] == [created.reference_case_id]
        other = await a.create_reference_case(NET, "hss_unreachable", one, request_id="req-2")
        assert other.reference_case_id != created.reference_case_id
        for client in (a, b):
            diagnosis = await client.classify(NET, "n", one[0])
            assert diagnosis.label == "hss_unreachable" and diagnosis.distance == pytest.approx(0, abs=1e-5)
        error = await _refused(a.create_reference_case(NET, "normal", one, request_id="bad:id"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_enrolment_stored_after_its_caller_gave_up_is_not_duplicated_by_the_retry(  # type: ignore[no-untyped-def]
    start_server, artifact, windows, tmp_path, caplog
) -> None:
    """Redis hangs past the server's 5 s socket timeout: the first attempt is answered
    UNAVAILABLE but is stored once Redis goes on; the client's retry, under the same request
    id, returns that case instead of creating a second one."""
    caplog.set_level(logging.INFO, logger="faultprint.server.rpc.unary")
    (tmp_path / "redis").mkdir()
    private = PrivateRedis(tmp_path / "redis", aof=False)
    await private.start()
    try:
        server, target = await start_server(model_source=str(artifact), redis_url=private.url)
        one = [windows("dns_failure", 1, seed=5)[0]]
        pauser = redis.Redis.from_url(private.url)
        pauser.execute_command("CLIENT", "PAUSE", 6500, "WRITE")
        async with AsyncFaultprintClient(target) as client:
            case = await client.create_reference_case(NET, "dns_failure", one)  # retried by the client
            listed = await client.references.ListReferenceCases(
                reference_case_service_pb2.ListReferenceCasesRequest(network=NET)
            )
        assert [c.reference_case_id for c in listed.reference_cases] == [case.reference_case_id]
        assert server.host.holdings() == (1, 1)
        assert "CreateReferenceCase -> UNAVAILABLE" in caplog.text  # the first attempt's answer
        pauser.close()
    finally:
        private.kill()
