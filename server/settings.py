"""Typed server settings, read from command-line flags with environment-variable defaults.

Every flag --foo-bar has the variable FAULTPRINT_FOO_BAR; REDIS_URL is also read.
A bad value stops start-up with a message naming the setting and what is allowed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields

from faultprint.server.batching.scheduler import BatchSchedulerOptions
from faultprint.server.model.runner import RunnerOptions
from faultprint.server.model.shadow import ShadowOptions

TELEMETRY_EXPORTERS = ("none", "console", "otlp", "prometheus")


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything a server replica needs to start."""

    # host:port to listen on; port 0 picks a free port.
    listen_address: str = "127.0.0.1:50051"
    # Server processes sharing listen_address (SO_REUSEPORT), each a full replica with its
    # own event loop, model replica and Redis connections (server/supervisor.py). One
    # process runs its Python on one core at a time; more workers use more cores.
    workers: int = 1
    # Set by the supervisor on each worker it starts: which share of the GPUs it runs on
    # and which metrics port it takes. -1: not a worker.
    worker_index: int = -1
    # Redis shared by all replicas.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every Redis key this deployment owns.
    redis_prefix: str = "faultprint"
    # An artifact directory to serve, or "redis" to serve the registry's promoted version
    # and follow every later promotion.
    model_source: str = "redis"
    # Largest batch sent to the encoder.
    max_batch_size: int = 64
    # Longest a request waits for a batch to fill while the encoder is busy, in ms.
    max_queue_delay_ms: float = 5.0
    # Requests queued before new ones are rejected with RESOURCE_EXHAUSTED.
    max_queue_size: int = 2048
    # Batch sizes the encoder is warmed for; batches are padded up to one of them.
    # Empty means powers of two up to max_batch_size.
    allowed_batch_sizes: tuple[int, ...] = ()
    # Batches handed to one device at once; 2 assembles (and on a GPU copies) the next
    # batch while the current one computes.
    batches_in_flight: int = 1
    # Time kept free at the end of each call's deadline for the answer to reach the caller,
    # in ms: a window is refused, or dropped before compute, unless its batch can finish
    # this long before the deadline.
    answer_margin_ms: float = 20.0
    # Under heavy load an idle device takes the queue once no request has arrived for this
    # long, in ms (or sooner, with a full batch or at max_queue_delay_ms). None ("auto"):
    # a tenth of a full batch's estimated compute time, at least 2 ms.
    arrival_gap_ms: float | None = None
    # Devices to run the encoder on: "auto" (every visible GPU, else the CPU), "cpu",
    # or a comma list such as "/GPU:0,/GPU:1". One model replica and worker per device.
    devices: str = "auto"
    # Logical devices the CPU is split into when no GPU serves (for testing the
    # multi-device path; on a real CPU they share the same cores).
    cpu_devices: int = 1
    # Threads one TensorFlow op may use; 0 is TensorFlow's default (one per core).
    intra_op_threads: int = 0
    # Encoder arithmetic: float32, mixed_float16 or mixed_bfloat16.
    precision: str = "float32"
    # Compile the encoder with XLA: auto (on CPUs; GPUs keep the cuDNN LSTM kernel,
    # which XLA cannot compile), on, or off.
    xla: str = "auto"
    # RPCs in progress before gRPC itself refuses new ones with RESOURCE_EXHAUSTED, before
    # any Python runs for them: the cheapest shedding under overload. 0: no limit.
    max_concurrent_rpcs: int = 0
    # Move loaded models out of Python's garbage collector (gc.freeze): a full collection
    # over one takes ~160 ms on two cores. Process-wide, so turn it off when several
    # servers share one process (as the tests do).
    freeze_gc: bool = True
    # Largest gRPC message accepted, in bytes.
    max_message_bytes: int = 16 * 1024 * 1024
    # Neighbours returned when a request asks for none.
    default_top_k: int = 3
    # How long a node's latest diagnosis is kept in Redis, in seconds.
    node_state_ttl_s: int = 24 * 3600
    # Share of classified windows a candidate version classifies too, in shadow (0: no shadowing).
    shadow_sample_rate: float = 0.05
    # Where model artifacts fetched from the registry are unpacked.
    model_cache_dir: str = "/tmp/faultprint-models"
    # Span and metric export: none, console, otlp (OTEL_EXPORTER_OTLP_ENDPOINT applies),
    # or prometheus (metrics only, served at metrics_address).
    telemetry_exporter: str = "none"
    # host:port of the Prometheus scrape endpoint (telemetry_exporter=prometheus).
    metrics_address: str = "127.0.0.1:9464"
    # Seconds a stopping server lets in-flight RPCs finish.
    shutdown_grace_s: float = 5.0
    # Seconds a server stopped by SIGTERM reports NOT_SERVING on the health service while
    # still answering, before its port closes: long enough for load balancers and
    # readiness probes to notice (Kubernetes probes every 10 s by default). SIGINT skips it.
    shutdown_drain_s: float = 5.0
    # Windows one stream may hold between reading them and writing their answers; a
    # caller that stops reading answers stops the server reading its windows here.
    stream_max_unanswered: int = 512
    # Log level name.
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.telemetry_exporter not in TELEMETRY_EXPORTERS:
            raise SettingsError(
                f"telemetry_exporter is {self.telemetry_exporter!r}; allowed: {TELEMETRY_EXPORTERS}"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"redis_url {self.redis_url!r} must start with redis://, rediss:// or unix://"
            )
        if ":" not in self.listen_address:
            raise SettingsError(f"listen_address {self.listen_address!r} must be host:port")
        if self.max_message_bytes < 64 * 1024:
            raise SettingsError(f"max_message_bytes must be at least 65536, got {self.max_message_bytes}")
        if self.default_top_k < 1:
            raise SettingsError(f"default_top_k must be at least 1, got {self.default_top_k}")
        if self.intra_op_threads < 0:
            raise SettingsError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if self.cpu_devices < 1:
            raise SettingsError(f"cpu_devices must be at least 1, got {self.cpu_devices}")
        if self.shutdown_drain_s < 0 or self.shutdown_grace_s < 0:
            raise SettingsError(
                f"shutdown_drain_s and shutdown_grace_s must be >= 0, got "
                f"{self.shutdown_drain_s} and {self.shutdown_grace_s}"
            )
        if self.stream_max_unanswered < 1:
            raise SettingsError(f"stream_max_unanswered must be at least 1, got {self.stream_max_unanswered}")
        if self.workers < 1:
            raise SettingsError(f"workers must be at least 1, got {self.workers}")
        if not -1 <= self.worker_index < self.workers:
            raise SettingsError(f"worker_index {self.worker_index} is not a worker of {self.workers}")
        self.batch_options()  # validates the batching fields
        self.runner_options()
        self.shadow_options()

    @property
    def supervises(self) -> bool:
        """Whether this process starts and watches workers rather than serving itself."""
        return self.workers > 1 and self.worker_index < 0

    def batch_options(self) -> BatchSchedulerOptions:
        try:
            return BatchSchedulerOptions(
                max_batch_size=self.max_batch_size,
                max_queue_delay_ms=self.max_queue_delay_ms,
                max_queue_size=self.max_queue_size,
                allowed_batch_sizes=self.allowed_batch_sizes,
                batches_in_flight=self.batches_in_flight,
                answer_margin_ms=self.answer_margin_ms,
                arrival_gap_ms=self.arrival_gap_ms,
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc

    def shadow_options(self) -> ShadowOptions:
        try:
            return ShadowOptions(sample_rate=self.shadow_sample_rate)
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc

    def runner_options(self) -> RunnerOptions:
        try:
            return RunnerOptions(precision=self.precision, xla=self.xla)
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, env: dict[str, str] | None = None
    ) -> ServerSettings:
        """Flags override FAULTPRINT_* variables, which override the defaults."""
        env = dict(os.environ if env is None else env)
        parser = argparse.ArgumentParser(prog="faultprint-server", description=__doc__)
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            parser.add_argument(flag, dest=f.name, default=None, help=f"(env FAULTPRINT_{f.name.upper()})")
        args = parser.parse_args(argv)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = getattr(args, f.name)
            if raw is None:
                raw = env.get(f"FAULTPRINT_{f.name.upper()}")
            if raw is None and f.name == "redis_url":
                raw = env.get("REDIS_URL")
            if raw is not None:
                values[f.name] = _parse(f.name, str(raw), f.type)
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, raw: str, kind: object) -> object:
    try:
        if kind in ("int", int):
            return int(raw)
        if kind in ("float", float):
            return float(raw)
        if kind == "float | None":
            if raw.lower() == "auto":
                return None
            try:
                return float(raw)
            except ValueError:
                raise ValueError("use a number or auto") from None
        if kind in ("bool", bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError("use true or false")
            return raw.lower() in ("1", "true", "yes")
        if "tuple" in str(kind):
            return tuple(int(x) for x in raw.replace(",", " ").split())
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind}: {exc}") from exc
    return raw
