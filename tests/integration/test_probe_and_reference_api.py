"""Probe and operator APIs through the real client, a real server on loopback and the real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from faultprint.client.client import AsyncFaultprintClient, FaultprintClient, StreamItem
from faultprint.registry.layout import RedisLayout
from faultprint.server.references import node_state as node_state_writer
from faultprint.v1 import (
    diagnosis_pb2,
    model_service_pb2,
    probe_service_pb2,
    probe_service_pb2_grpc,
    window_pb2,
)

pytestmark = pytest.mark.integration

NET = "net-a"


@pytest.fixture
async def served(start_server, artifact):  # type: ignore[no-untyped-def]
    """A server on the test artifact and an async client connected to it."""
    server, target = await start_server(model_source=str(artifact))
    async with AsyncFaultprintClient(target) as client:
        yield server, target, client


async def test_an_enrolled_case_serves_the_very_next_classification(served, windows) -> None:  # type: ignore[no-untyped-def]
    server, _, client = served
    normal = windows("normal", 2, seed=1)
    case = await client.create_reference_case(NET, "normal", [normal[0]], description="baseline")
    diagnosis = await client.classify(NET, "pcscf-1", normal[1])
    assert diagnosis.label == "normal"
    assert diagnosis.neighbours[0].reference_case_id == case.reference_case_id
    assert diagnosis.model_version == server.host.current.version
    assert diagnosis.verdict in (diagnosis_pb2.VERDICT_NORMAL, diagnosis_pb2.VERDICT_UNKNOWN)
    assert not diagnosis.HasField("margin")  # one label only


async def test_diagnosis_carries_neighbours_margin_and_verdict(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    hss = windows("hss_unreachable", 1, seed=2)[0]
    await client.create_reference_case(NET, "normal", [windows("normal", 1, seed=1)[0]], case_id="n1")
    await client.create_reference_case(NET, "hss_unreachable", [hss], case_id="h1")
    await client.create_reference_case(
        NET, "link_at_capacity", [windows("link_at_capacity", 1, 3)[0]], case_id="l1"
    )
    diagnosis = await client.classify(NET, "pcscf-2", hss, top_k=2)
    assert diagnosis.label == "hss_unreachable"
    assert diagnosis.distance == pytest.approx(0.0, abs=1e-5)  # the very window it was enrolled from
    assert diagnosis.verdict == diagnosis_pb2.VERDICT_FAULT
    assert diagnosis.neighbours[0].reference_case_id == "h1"
    assert len(diagnosis.neighbours) == 2
    assert diagnosis.margin == pytest.approx(diagnosis.neighbours[1].distance, abs=1e-5)
    assert diagnosis.distance_threshold == pytest.approx(1.0)


async def test_list_get_delete_and_the_network_disappears_with_its_last_case(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, target, client = served
    for i in range(3):
        await client.create_reference_case(NET, "normal", [windows("normal", 1, seed=i)[0]], case_id=f"c{i}")

    def sync_side() -> tuple[list[str], int, str]:
        with FaultprintClient(target) as sync:
            listed = [c.reference_case_id for c in sync.list_reference_cases(NET)]
            case = sync.get_reference_case(NET, "c1")
            return listed, case.window_count, sync.model_info().model_version

    listed, count, version = await asyncio.to_thread(sync_side)
    assert listed == ["c0", "c1", "c2"] and count == 1 and version
    for i in range(3):
        await client.delete_reference_case(NET, f"c{i}")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.classify(NET, "pcscf-1", windows("normal", 1)[0])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "has no reference cases" in err.value.details()


def window_with(values: np.ndarray | None = None, **fields: object) -> window_pb2.Window:
    return (
        window_pb2.Window(**fields)
        if values is None
        else window_pb2.Window(
            steps=values.shape[0], features=values.shape[1], packed_values=values.astype("<f4").tobytes()
        )
    )


async def test_bad_probe_input_gets_a_clear_status_and_the_server_keeps_serving(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, target, client = served
    good = windows("normal", 1)[0]
    await client.create_reference_case(NET, "normal", [good])
    nan = good.copy()
    nan[5, 9] = np.nan
    cases = [
        (NET, "n", window_with(good[:30]), grpc.StatusCode.INVALID_ARGUMENT, "(30 steps, 129 features), model expects (60"),
        (NET, "n", window_pb2.Window(steps=60, features=129, packed_values=b"\0" * 100), grpc.StatusCode.INVALID_ARGUMENT, "100 bytes, expected 30960"),
        (NET, "n", window_with(nan), grpc.StatusCode.INVALID_ARGUMENT, "step 5, feature 9"),
        (NET, "n", window_pb2.Window(steps=60, features=129), grpc.StatusCode.INVALID_ARGUMENT, "window is empty"),
        ("no-such-net", "n", window_with(good), grpc.StatusCode.NOT_FOUND, "network 'no-such-net' has no reference cases"),
        (NET, "", window_with(good), grpc.StatusCode.INVALID_ARGUMENT, "node '' is not a valid id"),
    ]  # fmt: skip
    async with grpc.aio.insecure_channel(target) as channel:
        stub = probe_service_pb2_grpc.ProbeServiceStub(channel)
        for network, node, window, code, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ClassifyWindow(
                    probe_service_pb2.ClassifyWindowRequest(network=network, node=node, window=window)
                )
            assert err.value.code() == code, message
            assert message in err.value.details()
    assert (await client.classify(NET, "n", good)).label == "normal"


async def test_oversized_message_is_resource_exhausted(start_server, artifact, windows) -> None:  # type: ignore[no-untyped-def]
    _, target = await start_server(model_source=str(artifact), max_message_bytes=64 * 1024)
    async with AsyncFaultprintClient(target) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.create_reference_case(NET, "normal", list(windows("normal", 4)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])


async def test_bad_operator_input_gets_a_clear_status(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    one = [windows("normal", 1)[0]]
    await client.create_reference_case(NET, "normal", one, case_id="dup")
    attempts = [
        (client.create_reference_case(NET, "normal", one, case_id="dup"), grpc.StatusCode.ALREADY_EXISTS, "already exists"),
        (client.create_reference_case("bad:net", "normal", one), grpc.StatusCode.INVALID_ARGUMENT, "not a valid id"),
        (client.create_reference_case(NET, "normal", []), grpc.StatusCode.INVALID_ARGUMENT, "1 to 64 example windows"),
        (client.create_reference_case(NET, "", one), grpc.StatusCode.INVALID_ARGUMENT, "label ''"),
        (client.delete_reference_case(NET, "missing"), grpc.StatusCode.NOT_FOUND, "no reference case 'missing'"),
    ]  # fmt: skip
    for call, code, message in attempts:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == code
        assert message in err.value.details()


async def test_stream_answers_every_window_and_reports_bad_ones_without_closing(served, windows) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    await client.create_reference_case(NET, "normal", [windows("normal", 1, seed=1)[0]])
    await client.create_reference_case(NET, "hss_unreachable", [windows("hss_unreachable", 1, seed=2)[0]])
    sent = windows("normal", 6, seed=3)

    async def items() -> AsyncIterator[StreamItem]:
        for i, w in enumerate(sent):
            yield StreamItem(NET, f"node-{i % 2}", w[:59] if i == 3 else w, sequence=100 + i)

    answers = {r.sequence: r async for r in client.classify_stream(items())}
    assert sorted(answers) == [100 + i for i in range(6)]
    assert answers[103].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "model expects (60 steps" in answers[103].error.message
    assert all(answers[100 + i].HasField("diagnosis") for i in (0, 1, 2, 4, 5))


async def test_latest_node_diagnosis_is_written_behind_to_redis(served, windows) -> None:  # type: ignore[no-untyped-def]
    server, _, client = served
    await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
    diagnosis = await client.classify(NET, "pcscf-9", windows("normal", 1, seed=4)[0])
    await server.writer.flush()
    recorded = await client.model.GetNodeDiagnosis(
        model_service_pb2.GetNodeDiagnosisRequest(network=NET, node="pcscf-9")
    )
    node = recorded.node_diagnosis
    assert (node.network, node.node) == (NET, "pcscf-9")
    assert (node.label, node.verdict, node.model_version) == (
        diagnosis.label, diagnosis.verdict, diagnosis.model_version
    )  # fmt: skip
    assert len(node.embedding) == 4 and node.distance == pytest.approx(diagnosis.distance, abs=1e-6)
    assert abs(node.record_time.ToSeconds() - time.time()) < 60
    # One key per node, expiring after the node's state TTL.
    key = RedisLayout(server.settings.redis_prefix).node(NET, "pcscf-9")
    ttl_ms = await server.redis.pttl(key)
    assert 0 < ttl_ms <= server.settings.node_state_ttl_s * 1000
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.model.GetNodeDiagnosis(
            model_service_pb2.GetNodeDiagnosisRequest(network=NET, node="pcscf-0")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_one_flush_writes_every_pending_node_even_after_redis_lost_its_scripts(  # type: ignore[no-untyped-def]
    served, windows, monkeypatch
) -> None:
    """A flush sets its nodes in script calls of at most MAX_NODES_PER_WRITE; a Redis that has
    lost its script cache (as after a restart) gets the script again, and nothing is dropped."""
    server, _, client = served
    await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
    answered = await client.classify(NET, "pcscf-0", windows("normal", 1, seed=5)[0])
    await server.writer.flush()
    monkeypatch.setattr(node_state_writer, "MAX_NODES_PER_WRITE", 2)
    await server.redis.script_flush()
    nodes = [f"pcscf-{i}" for i in range(1, 6)]
    for i, node in enumerate(nodes):
        diagnosis = diagnosis_pb2.Diagnosis()
        diagnosis.CopyFrom(answered)
        diagnosis.node, diagnosis.distance = node, 0.5 + i
        server.writer.record(diagnosis, np.full(4, i, dtype=np.float32))
    await server.writer.flush()
    assert server.writer.dropped == 0
    for i, node in enumerate(nodes):
        recorded = await client.model.GetNodeDiagnosis(
            model_service_pb2.GetNodeDiagnosisRequest(network=NET, node=node)
        )
        state = recorded.node_diagnosis
        assert (state.node, state.label, state.distance) == (node, answered.label, 0.5 + i)
        assert list(state.embedding) == [i] * 4
        ttl_ms = await server.redis.pttl(RedisLayout(server.settings.redis_prefix).node(NET, node))
        assert 0 < ttl_ms <= server.settings.node_state_ttl_s * 1000
