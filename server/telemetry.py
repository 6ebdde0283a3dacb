"""OpenTelemetry wiring: standard RPC spans, batch spans linked to the calls they served, and metrics.

RPC spans come from opentelemetry-instrumentation-grpc (SERVER spans named
``faultprint.v1.ProbeService/ClassifyWindow`` with the RPC semantic conventions,
continuing the caller's ``traceparent``); each encoder batch is a span of its own, linked
to the spans of the calls whose windows it carries. Metrics are in seconds and present
from start: RPC duration (``rpc.server.duration``), queue depth and wait, batch size,
padding rows and compute time, rejections by reason, expired and late requests, event-loop
lag (server/loop_lag.py), window values out of the probe data contract, minute-stream
outcomes, open incidents and the model versions served. The exporter is a setting: none
(instruments stay no-ops unless the embedding application installed providers),
console, OTLP over gRPC, or prometheus (a scrape endpoint). The standard variables apply:
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_*,
OTEL_METRIC_EXPORT_INTERVAL, OTEL_TRACES_SAMPLER.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Histogram, Meter, Observation
from opentelemetry.trace import Link, SpanContext, Tracer

from faultprint.traffic.catalogue import FEATURE_NAMES

_configured = False


def configure(exporter: str, metrics_address: str = "", service_name: str = "faultprint-server") -> None:
    """Installs the global tracer and meter providers once per process.

    "prometheus" serves metrics for scraping at http://metrics_address/metrics (no spans).
    service_name applies unless OTEL_SERVICE_NAME names the service.
    """
    global _configured
    if exporter == "none" or _configured:
        return
    resource = _resource(service_name)
    if exporter == "prometheus":
        _configure_prometheus(metrics_address, resource)
        _configured = True
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )
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
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=export_interval_ms())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    _configured = True


# Metric export interval when OTEL_METRIC_EXPORT_INTERVAL is unset: the SDK's 60 s hides
# a minute-long overload, so 10 s.
DEFAULT_EXPORT_INTERVAL_MS = 10_000


def _resource(service_name: str) -> Any:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES applies), named service_name unless
    OTEL_SERVICE_NAME names the service."""
    from opentelemetry.sdk.resources import Resource

    return Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name})


def export_interval_ms() -> float:
    """OTEL_METRIC_EXPORT_INTERVAL, else DEFAULT_EXPORT_INTERVAL_MS."""
    return float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") or DEFAULT_EXPORT_INTERVAL_MS)


def _configure_prometheus(address: str, resource: Any) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()]))


def rpc_span_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """SERVER spans for every faultprint call, by OpenTelemetry's gRPC instrumentation, when
    spans go anywhere (a tracer provider is installed: telemetry_exporter console or otlp, or
    the embedding application's); none otherwise, for it costs every call. Health checks
    and reflection are left untraced (orchestrators call health every few seconds)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    untraced = filters.any_of(
        filters.service_name("grpc.health.v1.Health"),
        filters.service_prefix("grpc.reflection."),
    )
    return [aio_server_interceptor(filter_=filters.negate(untraced))]


def traced_call() -> SpanContext | None:
    """The current span's context, if the current call is traced."""
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def links(requests: Sequence[Any]) -> list[Link]:
    """One link per distinct traced call among requests (a batch's windows, each with .trace)."""
    seen = {r.trace.span_id: r.trace for r in requests if r.trace is not None}
    return [Link(context) for context in seen.values()]


# Buckets of faultprint.rpc.deadline_left and .deadline_on_arrival, in seconds: the first
# counts calls at or past their deadline; the next few resolve the answer margin (20 ms by default).
DEADLINE_LEFT_BOUNDS_S = [0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]
# Buckets of the RPC duration, queue wait and batch compute histograms, in seconds: doubling
# from 0.25 ms to 16 s. OpenTelemetry's default buckets start at 5 ms, where the small
# encoder's whole call takes 2-5 ms on two CPU cores, its batch-1 compute about 1 ms and a
# queue wait with the device idle under 0.1 ms, so every percentile under 5 ms read as one bucket.
LATENCY_BOUNDS_S = [0.00025 * 2**i for i in range(17)]
# Buckets of the event-loop lag, in seconds: OpenTelemetry's defaults, whose 50 ms bound
# counts the stalls the benchmark suite reports.
LOOP_LAG_BOUNDS_S = [0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

# Values of received windows outside the probe data contract (traffic/contract.py), by
# column and outcome: served (a few in a window: counted, served anyway) or refused (the
# window was unusable: INVALID_ARGUMENT). Window decoding (server/rpc/windows.py) records
# it, below the components that hold a ServerTelemetry, so it is declared here on the
# same meter: until configure() installs a provider it is OpenTelemetry's proxy, which
# binds to that provider then.
values_out_of_contract: Counter = metrics.get_meter("faultprint.server").create_counter(
    "faultprint.window.values_out_of_contract",
    unit="{value}",
    description="Window values outside their column's valid range (docs/data-contract.md), "
    "by column and outcome (served or refused)",
)

# Reasons a window is refused at admission (server/batching/scheduler.py).
REJECTION_REASONS = ("queue_full", "overloaded", "deadline_too_short", "shutting_down")


@dataclass
class ServerTelemetry:
    """The server's instruments; also the batch scheduler's observer."""

    tracer: Tracer
    meter: Meter
    rpc_duration_s: Histogram
    rpc_deadline_left_s: Histogram
    rpc_deadline_on_arrival_s: Histogram
    batch_size: Histogram
    batch_rows: Counter
    batch_compute_s: Histogram
    queue_wait_s: Histogram
    event_loop_lag_s: Histogram
    rejected_requests: Counter
    expired_requests: Counter
    late_requests: Counter

    @classmethod
    def create(cls) -> ServerTelemetry:
        meter = metrics.get_meter("faultprint.server")
        telemetry = cls(
            tracer=trace.get_tracer("faultprint.server"),
            meter=meter,
            rpc_duration_s=meter.create_histogram(
                "rpc.server.duration",
                unit="s",
                description="Server-side duration of each unary RPC, by rpc.service, rpc.method and "
                "rpc.grpc.status_code",
                explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_S,
            ),
            rpc_deadline_left_s=meter.create_histogram(
                "faultprint.rpc.deadline_left",
                unit="s",
                description="Time left before the caller's deadline when a successful answer was ready; "
                "under the answer margin, it may reach the caller too late",
                explicit_bucket_boundaries_advisory=DEADLINE_LEFT_BOUNDS_S,
            ),
            rpc_deadline_on_arrival_s=meter.create_histogram(
                "faultprint.rpc.deadline_on_arrival",
                unit="s",
                description="Time left before the caller's deadline when a call reached faultprint's "
                "handler; falling under load, calls are queueing in gRPC before the server takes them",
                explicit_bucket_boundaries_advisory=DEADLINE_LEFT_BOUNDS_S,
            ),
            batch_size=meter.create_histogram(
                "faultprint.batch.size",
                unit="{window}",
                description="Windows per encoder batch, before padding",
                explicit_bucket_boundaries_advisory=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
            ),
            batch_rows=meter.create_counter(
                "faultprint.batch.rows",
                unit="{row}",
                description="Encoder batch rows by kind: window (a request) or padding (wasted compute)",
            ),
            batch_compute_s=meter.create_histogram(
                "faultprint.batch.compute",
                unit="s",
                description="Encoder time per batch, by device",
                explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_S,
            ),
            queue_wait_s=meter.create_histogram(
                "faultprint.queue.wait",
                unit="s",
                description="Time a window waited for its batch",
                explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_S,
            ),
            event_loop_lag_s=meter.create_histogram(
                "faultprint.event_loop.lag",
                unit="s",
                description="How late the event loop ran a 100 ms timer: every call in flight waits as long",
                explicit_bucket_boundaries_advisory=LOOP_LAG_BOUNDS_S,
            ),
            rejected_requests=meter.create_counter(
                "faultprint.requests.rejected",
                unit="{request}",
                description="Windows refused at admission, by reason "
                "(queue_full, overloaded, deadline_too_short, shutting_down)",
            ),
            expired_requests=meter.create_counter(
                "faultprint.requests.expired",
                unit="{request}",
                description="Queued windows dropped before compute: deadline passed or could not be met",
            ),
            late_requests=meter.create_counter(
                "faultprint.requests.late",
                unit="{request}",
                description="Windows whose batch finished after their deadline, answered DEADLINE_EXCEEDED "
                "(the admission estimate was wrong)",
            ),
        )
        telemetry._start_counters_at_zero()
        return telemetry

    def _start_counters_at_zero(self) -> None:
        """Every counter series a dashboard or alert reads exists from start, at 0: rate() over a
        series that appears with its first event misses that event."""
        for reason in REJECTION_REASONS:
            self.rejected_requests.add(0, {"reason": reason})
        self.expired_requests.add(0)
        self.late_requests.add(0)
        self.batch_rows.add(0, _WINDOW_ROWS)
        self.batch_rows.add(0, _PADDING_ROWS)
        for outcome in ("served", "refused"):
            for column in FEATURE_NAMES:
                values_out_of_contract.add(0, {"outcome": outcome, "column": column})

    def observe_queue(self, queue_depth: Callable[[], int], batches_in_flight: Callable[[], int]) -> None:
        """Reports the batch queue's depth and the batches on the devices at each collection."""
        self.meter.create_observable_gauge(
            "faultprint.queue.depth",
            [lambda options: [Observation(queue_depth())]],
            unit="{request}",
            description="Windows waiting for a batch",
        )
        self.meter.create_observable_gauge(
            "faultprint.batches.in_flight",
            [lambda options: [Observation(batches_in_flight())]],
            unit="{batch}",
            description="Batches handed to the devices and not yet finished",
        )

    def observe_minute_streams(
        self, stats: Callable[[], Mapping[str, int]], nodes: Callable[[], int]
    ) -> None:
        """Reports what minute streams brought (counters since start, by outcome) and the nodes
        followed, at each collection."""
        self.meter.create_observable_counter(
            "faultprint.minutes",
            [lambda options: [Observation(v, {"outcome": k}) for k, v in stats().items()]],
            unit="{minute}",
            description="Node-minutes taken from minute streams, by outcome (diagnosed, not_diagnosed, "
            "duplicates, late, reordered, refused), and incident events emitted",
        )
        self.meter.create_observable_gauge(
            "faultprint.nodes.followed",
            [lambda options: [Observation(nodes())]],
            unit="{node}",
            description="Nodes whose window this replica keeps from minute streams",
        )

    def observe_models(self, versions: Callable[[], Mapping[str, str | None]]) -> None:
        """Reports, at each collection, the model version in each role (serving, candidate)."""
        self.meter.create_observable_gauge(
            "faultprint.model.loaded",
            [lambda options: [Observation(1, {"role": r, "version": v}) for r, v in versions().items() if v]],
            unit="{model}",
            description="1 for each model version this replica holds, by role: serving, or candidate "
            "(in shadow)",
        )

    def observe_incidents(self, open_by_label: Callable[[], Mapping[str, int]]) -> None:
        """Reports, at each collection, the incidents open on the nodes this replica follows:
        in all (present from start, at 0) and by label."""
        self.meter.create_observable_gauge(
            "faultprint.incidents.open",
            [lambda options: [Observation(sum(open_by_label().values()))]],
            unit="{incident}",
            description="Incidents open on the nodes this replica follows",
        )
        self.meter.create_observable_gauge(
            "faultprint.incidents.open_by_label",
            [lambda options: [Observation(n, {"label": label}) for label, n in open_by_label().items()]],
            unit="{incident}",
            description="Incidents open on the nodes this replica follows, by label (labels with none "
            "are absent)",
        )

    # SchedulerObserver
    def rejected(self, reason: str) -> None:
        self.rejected_requests.add(1, {"reason": reason})

    def expired(self, count: int) -> None:
        self.expired_requests.add(count)

    def late(self, count: int) -> None:
        self.late_requests.add(count)

    def dispatched(self, size: int, padded_size: int, queue_waits_s: list[float]) -> None:
        self.batch_size.record(size)
        self.batch_rows.add(size, _WINDOW_ROWS)
        if padded_size > size:
            self.batch_rows.add(padded_size - size, _PADDING_ROWS)
        record = self.queue_wait_s.record
        for wait in queue_waits_s:
            record(wait)


_WINDOW_ROWS = {"kind": "window"}
_PADDING_ROWS = {"kind": "padding"}
