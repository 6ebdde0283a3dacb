"""OpenTelemetry wiring: a span per RPC and per batch, and the metrics that show what the batcher does.

Metrics: RPC latency; queue depth and queue wait; batch size, padding rows and compute
time; rejections by reason; requests dropped as expired; how late the event loop runs
(server/loop_lag.py); received window values that break the probe data contract. The
exporter is a setting: none (instruments stay no-ops unless the embedding application
installed providers),
console, OTLP over gRPC (configured by the standard OTEL_EXPORTER_OTLP_* variables),
or prometheus (a scrape endpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Histogram, Meter, Observation
from opentelemetry.trace import Tracer

_configured = False


def configure(exporter: str, metrics_address: str = "", service_name: str = "faultprint-server") -> None:
    """Installs the global tracer and meter providers once per process.

    "prometheus" serves metrics for scraping at http://metrics_address/metrics (no spans).
    """
    global _configured
    if exporter == "none" or _configured:
        return
    if exporter == "prometheus":
        _configure_prometheus(metrics_address, service_name)
        _configured = True
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


def _configure_prometheus(address: str, service_name: str) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
    resource = Resource.create({"service.name": service_name})
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()]))


# Buckets of faultprint.rpc.deadline_left and .deadline_on_arrival, in ms: the first counts
# calls at or past their deadline; the next few resolve the answer margin (20 ms by default).
DEADLINE_LEFT_BOUNDS_MS = [0, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
# Buckets of the RPC latency, queue wait and batch compute histograms, in ms: doubling from
# 0.25 ms to 16 s. OpenTelemetry's default buckets start at 5 ms, where the small encoder's
# whole call takes 2-5 ms on two CPU cores, its batch-1 compute about 1 ms and a queue wait
# with the device idle under 0.1 ms, so every percentile under 5 ms read as one bucket.
LATENCY_BOUNDS_MS = [0.25 * 2**i for i in range(17)]

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


@dataclass
class ServerTelemetry:
    """The server's instruments; also the batch scheduler's observer."""

    tracer: Tracer
    meter: Meter
    rpc_latency_ms: Histogram
    rpc_deadline_left_ms: Histogram
    rpc_deadline_on_arrival_ms: Histogram
    batch_size: Histogram
    batch_rows: Counter
    batch_compute_ms: Histogram
    queue_wait_ms: Histogram
    event_loop_lag_ms: Histogram
    rejected_requests: Counter
    expired_requests: Counter
    late_requests: Counter

    @classmethod
    def create(cls) -> ServerTelemetry:
        meter = metrics.get_meter("faultprint.server")
        return cls(
            tracer=trace.get_tracer("faultprint.server"),
            meter=meter,
            rpc_latency_ms=meter.create_histogram(
                "faultprint.rpc.latency",
                unit="ms",
                description="Server-side latency of each RPC",
                explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_MS,
            ),
            rpc_deadline_left_ms=meter.create_histogram(
                "faultprint.rpc.deadline_left",
                unit="ms",
                description="Time left before the caller's deadline when a successful answer was ready; "
                "under the answer margin, it may reach the caller too late",
                explicit_bucket_boundaries_advisory=DEADLINE_LEFT_BOUNDS_MS,
            ),
            rpc_deadline_on_arrival_ms=meter.create_histogram(
                "faultprint.rpc.deadline_on_arrival",
                unit="ms",
                description="Time left before the caller's deadline when a call reached faultprint's "
                "handler; falling under load, calls are queueing in gRPC before the server takes them",
                explicit_bucket_boundaries_advisory=DEADLINE_LEFT_BOUNDS_MS,
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
            batch_compute_ms=meter.create_histogram(
                "faultprint.batch.compute",
                unit="ms",
                description="Encoder time per batch, by device",
                explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_MS,
            ),
            queue_wait_ms=meter.create_histogram(
                "faultprint.queue.wait",
                unit="ms",
                description="Time a window waited for its batch",
                explicit_bucket_boundaries_advisory=LATENCY_BOUNDS_MS,
            ),
            event_loop_lag_ms=meter.create_histogram(
                "faultprint.event_loop.lag",
                unit="ms",
                description="How late the event loop ran a 100 ms timer: every call in flight waits as long",
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
        record = self.queue_wait_ms.record
        for wait in queue_waits_s:
            record(wait * 1000)


_WINDOW_ROWS = {"kind": "window"}
_PADDING_ROWS = {"kind": "padding"}
