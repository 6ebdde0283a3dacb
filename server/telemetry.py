"""OpenTelemetry wiring: a span per RPC and per batch, latency and batch-size histograms.

The exporter is a setting: none (instruments stay no-ops unless the embedding
application installed providers), console, or OTLP over gRPC (configured by the
standard OTEL_EXPORTER_OTLP_* variables).
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.trace import Tracer

_configured = False


def configure(exporter: str, service_name: str = "faultprint-server") -> None:
    """Installs the global tracer and meter providers once per process."""
    global _configured
    if exporter == "none" or _configured:
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporter: SpanExporter
    metric_exporter: MetricExporter
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter, metric_exporter = OTLPSpanExporter(), OTLPMetricExporter()
    else:
        span_exporter, metric_exporter = ConsoleSpanExporter(), ConsoleMetricExporter()
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=10_000)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    _configured = True


@dataclass
class ServerTelemetry:
    tracer: Tracer
    meter: Meter
    rpc_latency_ms: Histogram
    batch_size: Histogram
    batch_compute_ms: Histogram

    @classmethod
    def create(cls) -> ServerTelemetry:
        meter = metrics.get_meter("faultprint.server")
        return cls(
            tracer=trace.get_tracer("faultprint.server"),
            meter=meter,
            rpc_latency_ms=meter.create_histogram(
                "faultprint.rpc.latency", unit="ms", description="Server-side latency of each RPC"
            ),
            batch_size=meter.create_histogram(
                "faultprint.batch.size", unit="{window}", description="Windows per encoder batch"
            ),
            batch_compute_ms=meter.create_histogram(
                "faultprint.batch.compute", unit="ms", description="Encoder time per batch"
            ),
        )
