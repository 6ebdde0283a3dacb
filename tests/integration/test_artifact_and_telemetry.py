"""The exported SavedModel serves the same embeddings as the server, and the server emits its spans and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from faultprint.client.client import AsyncFaultprintClient, StreamItem, encode_window
from faultprint.encoder.artifact import SAVED_MODEL_DIR, load_tower, read_metadata
from faultprint.server.batching.assembly import aligned_zeros
from faultprint.server.model.runner import ModelRunner, RunnerOptions, rebuilt_tower, time_graphs, warm_alike
from faultprint.v1 import probe_service_pb2

pytestmark = pytest.mark.integration


def test_saved_model_signature_matches_the_served_encoder(artifact: Path, windows) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    batch = windows("normal", 3)
    loaded = tf.saved_model.load(str(artifact / SAVED_MODEL_DIR))
    signature = loaded.signatures["serving_default"]
    assert signature.structured_input_signature[1]["windows"].shape.as_list() == [None, 60, 129]
    from_saved_model = signature(windows=tf.constant(batch))["embeddings"].numpy()
    runner = ModelRunner(artifact)
    np.testing.assert_allclose(from_saved_model, runner.embed(batch), atol=1e-5)
    # A batch from the server's aligned buffers is read in place, with the same result.
    in_place, copied = aligned_zeros(batch.shape), aligned_zeros((batch.size + 1,))[1:].reshape(batch.shape)
    in_place[...] = copied[...] = batch  # copied starts 4 bytes off alignment: TensorFlow copies it
    np.testing.assert_array_equal(runner.embed(in_place), runner.embed(copied))


async def test_rpcs_and_batches_produce_spans_and_metrics(start_server, artifact, windows) -> None:  # type: ignore[no-untyped-def]
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    if trace.get_tracer_provider() is not tracer_provider:
        pytest.skip("another test already installed global OpenTelemetry providers in this process")

    _, target = await start_server(model_source=str(artifact))
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-t", "normal", [windows("normal", 1)[0]])
        request = probe_service_pb2.ClassifyWindowRequest(
            network="net-t", node="pcscf-1", window=encode_window(windows("normal", 1, seed=1)[0])
        )
        traceparent = f"00-{caller_trace}-{caller_span}-01"
        await client.probe.ClassifyWindow(request, timeout=5, metadata=[("traceparent", traceparent)])
        answers = [a async for a in client.classify_stream(_one_item(windows("normal", 1, seed=2)[0]))]
        assert answers[0].diagnosis.label == "normal"
    await asyncio.sleep(0.25)  # the loop-lag monitor probes every 100 ms
    finished = spans.get_finished_spans()
    names = {s.name: s for s in finished}
    classify = names["/faultprint.v1.ProbeService/ClassifyWindow"]
    assert classify.kind == SpanKind.SERVER
    assert classify.attributes["rpc.system"] == "grpc"
    assert classify.attributes["rpc.service"] == "faultprint.v1.ProbeService"
    assert classify.attributes["rpc.method"] == "ClassifyWindow"
    assert format(classify.context.trace_id, "032x") == caller_trace  # the caller's trace goes on
    assert format(classify.parent.span_id, "016x") == caller_span
    assert "/faultprint.v1.ReferenceCaseService/CreateReferenceCase" in names
    assert "/faultprint.v1.ProbeService/StreamClassifyWindows" in names
    assert not any("grpc.health" in name for name in names)
    batches = [s for s in finished if s.name == "faultprint.batch"]
    linked = {link.context.span_id for batch in batches for link in batch.links}
    assert classify.context.span_id in linked  # each batch links the calls it served
    assert names["/faultprint.v1.ProbeService/StreamClassifyWindows"].context.span_id in linked
    assert all(batch.attributes["batch.size"] == 1 for batch in batches)

    exported = reader.get_metrics_data()
    instruments = {
        m.name: m for rm in exported.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {
        "rpc.server.duration",
        "faultprint.batch.size",
        "faultprint.batch.rows",
        "faultprint.batch.compute",
        "faultprint.queue.wait",
        "faultprint.queue.depth",
        "faultprint.batches.in_flight",
        "faultprint.event_loop.lag",
        "faultprint.rpc.deadline_left",
        "faultprint.rpc.deadline_on_arrival",
        "faultprint.model.loaded",
        "faultprint.incidents.open",
        "faultprint.minutes",
    } <= set(instruments)
    durations = [name for name, m in instruments.items() if m.unit == "s"]
    assert {"rpc.server.duration", "faultprint.queue.wait", "faultprint.batch.compute"} <= set(durations)
    # Counters exist from start, before their first event: a rate() over them sees the first one.
    rejected = {
        p.attributes["reason"]: p.value for p in instruments["faultprint.requests.rejected"].data.data_points
    }
    assert rejected == dict.fromkeys(("queue_full", "overloaded", "deadline_too_short", "shutting_down"), 0)
    assert [p.value for p in instruments["faultprint.requests.late"].data.data_points] == [0]
    # One point per model a replica holds. In this process of many servers the gauge reports
    # models of one server only (OpenTelemetry keeps one registration per instrument name).
    loaded = instruments["faultprint.model.loaded"].data.data_points
    assert {p.attributes["role"] for p in loaded} == {"serving"} and all(p.value == 1 for p in loaded)
    # The classification arrived and was answered well inside its 5 s deadline. gRPC sends
    # the timeout rounded to its wire format's precision, so the server's deadline may lie a
    # few ms past the client's.
    arrival, ready = (classify_point(exported, name) for name in ("faultprint.rpc.deadline_on_arrival",
                                                                  "faultprint.rpc.deadline_left"))  # fmt: skip
    assert arrival.count == ready.count == 1
    assert 4.0 < ready.sum <= arrival.sum < 5.1
    # Durations resolve below OpenTelemetry's default first bucket of 5 ms, where the small
    # encoder's calls, batch-1 compute and idle queue waits all fall.
    duration = classify_point(exported, "rpc.server.duration")
    assert duration.count == 1 and duration.explicit_bounds[:3] == (0.00025, 0.0005, 0.001)
    assert duration.attributes["rpc.grpc.status_code"] == 0
    assert sum(1 for bound in duration.explicit_bounds if bound < 0.005) == 5


async def _one_item(window):  # type: ignore[no-untyped-def]
    yield StreamItem("net-t", "pcscf-2", window, sequence=1)


def classify_point(exported, name: str):  # type: ignore[no-untyped-def]
    """The one ClassifyWindow data point of the histogram name."""
    (point,) = [
        point
        for rm in exported.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for point in m.data.data_points
        if point.attributes["rpc.method"] == "ClassifyWindow"
    ]
    return point


def test_xla_compiled_encoder_serves_the_same_embeddings(artifact: Path, windows) -> None:  # type: ignore[no-untyped-def]
    batch = windows("normal", 4)
    runners = {mode: ModelRunner(artifact, options=RunnerOptions(xla=mode)) for mode in ("on", "off", "auto")}
    for runner in runners.values():
        for size in (1, 4):
            runner.prepare(size)
        warm_alike([runner], {size: time_graphs([runner], size) for size in (1, 4)})
    assert runners["on"].compiled_sizes == (1, 4) and runners["off"].compiled_sizes == ()
    # auto keeps whichever graph was faster at each size; every one gives the same embeddings
    for mode in ("on", "auto"):
        np.testing.assert_allclose(runners[mode].embed(batch), runners["off"].embed(batch), atol=1e-5)
        np.testing.assert_allclose(runners[mode].embed(batch[:3]), runners["off"].embed(batch[:3]), atol=1e-5)


def test_xla_on_a_gpu_rebuilds_the_lstms_off_the_cudnn_path(artifact: Path, windows) -> None:  # type: ignore[no-untyped-def]
    tower = load_tower(artifact, read_metadata(artifact))
    rebuilt = rebuilt_tower(tower, "float32", cudnn=False)
    lstms = [layer for layer in rebuilt.layers if type(layer).__name__ == "LSTM"]
    assert len(lstms) == 2 and all(layer.use_cudnn is False for layer in lstms)
    batch = windows("normal", 2)
    np.testing.assert_allclose(rebuilt(batch).numpy(), tower(batch).numpy(), atol=1e-6)
    assert rebuilt_tower(tower, "float32", cudnn=True) is tower
