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

from faultprint.client.client import AsyncFaultprintClient
from faultprint.encoder.artifact import SAVED_MODEL_DIR, load_tower, read_metadata
from faultprint.server.batching.assembly import aligned_zeros
from faultprint.server.model.runner import ModelRunner, RunnerOptions, rebuilt_tower, time_graphs, warm_alike

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
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-t", "normal", [windows("normal", 1)[0]])
        await client.classify("net-t", "pcscf-1", windows("normal", 1, seed=1)[0], timeout_s=5)
    await asyncio.sleep(0.25)  # the loop-lag monitor probes every 100 ms
    names = {s.name: s for s in spans.get_finished_spans()}
    assert {"faultprint.v1/CreateReferenceCase", "faultprint.v1/ClassifyWindow", "faultprint.batch"} <= set(
        names
    )
    assert names["faultprint.batch"].attributes["batch.size"] == 1
    exported = reader.get_metrics_data()
    instruments = {m.name for rm in exported.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {
        "faultprint.rpc.latency",
        "faultprint.batch.size",
        "faultprint.batch.rows",
        "faultprint.batch.compute",
        "faultprint.queue.wait",
        "faultprint.queue.depth",
        "faultprint.batches.in_flight",
        "faultprint.event_loop.lag",
        "faultprint.rpc.deadline_left",
        "faultprint.rpc.deadline_on_arrival",
    } <= instruments
    # The classification arrived and was answered well inside its 5 s deadline. gRPC sends
    # the timeout rounded to its wire format's precision, so the server's deadline may lie a
    # few ms past the client's.
    arrival, ready = (classify_point(exported, name) for name in ("deadline_on_arrival", "deadline_left"))
    assert arrival.count == ready.count == 1
    assert 4000 < ready.sum <= arrival.sum < 5100
    # Latencies resolve below OpenTelemetry's default first bucket of 5 ms, where the small
    # encoder's calls, batch-1 compute and idle queue waits all fall.
    latency = classify_point(exported, "latency")
    assert latency.count == 1 and latency.explicit_bounds[:3] == (0.25, 0.5, 1.0)
    assert sum(1 for bound in latency.explicit_bounds if bound < 5) == 5


def classify_point(exported, name: str):  # type: ignore[no-untyped-def]
    """The one ClassifyWindow data point of faultprint.rpc.<name>."""
    (point,) = [
        point
        for rm in exported.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == f"faultprint.rpc.{name}"
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
