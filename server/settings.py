"""Typed server settings: the server's own options and its components', from flags and variables.

Each option is declared once, with the comment above it as its documentation: on its
component's options class (the batch scheduler's, the model runner's, the shadow's) or,
for the process itself, on ServerSettings. Flags, variables, ``--help`` and the table in
docs/configuration.md are generated from those declarations (``python -m
faultprint.server --options-table`` prints the table). Every flag --foo-bar has the
variable FAULTPRINT_FOO_BAR; REDIS_URL is also read. A bad value stops start-up with a
message naming the setting and what is allowed.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from faultprint.server.batching.scheduler import BatchSchedulerOptions
from faultprint.server.incidents.onap import OnapOptions
from faultprint.server.model.runner import RunnerOptions
from faultprint.server.model.shadow import ShadowOptions
from faultprint.server.monitoring.life_cycle import LifeCycleOptions
from faultprint.server.monitoring.monitor import MonitorOptions
from faultprint.server.security.transport import SecurityOptions

TELEMETRY_EXPORTERS = ("none", "console", "otlp", "prometheus")


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything a server replica needs to start."""

    # host:port to listen on; port 0 picks a free port.
    listen_address: str = "127.0.0.1:50051"
    # host:port of a second, plaintext port that serves only the gRPC health service, for
    # orchestrators' probes that cannot speak TLS (Kubernetes' grpc probes); empty: none. It
    # reports what the main port's health service reports, drain included.
    health_listen_address: str = ""
    # Server processes sharing listen_address (SO_REUSEPORT), each a full replica with its
    # own event loop, model replica and Redis connections (server/supervisor.py). One
    # process runs its Python on one core at a time; more workers use more cores.
    workers: int = 1
    # Set by the supervisor on each worker it starts: which share of the GPUs it runs on
    # and which metrics port it takes. -1: not a worker.
    worker_index: int = -1
    # Redis shared by all replicas.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prefix of every Redis key this deployment owns (no '{' or '}': keys carry it in hash tags).
    redis_prefix: str = "faultprint"
    # How often this replica relays events that writers left in network outboxes (a writer
    # relays its own at once; these are the leftovers of a replica that died meanwhile).
    outbox_sweep_interval_s: float = 2.0
    # Whether redis_url names a Redis Cluster node: "auto" asks that node at start-up
    # (CLUSTER INFO; an unreachable Redis is taken for a single server), "yes" or "no".
    redis_cluster: str = "auto"
    # An artifact directory to serve, or "redis" to serve the registry's promoted version
    # and follow every later promotion.
    model_source: str = "redis"
    # Devices to run the encoder on: "auto" (every visible GPU, else the CPU), "cpu",
    # or a comma list such as "/GPU:0,/GPU:1". One model replica and worker per device.
    devices: str = "auto"
    # Logical devices the CPU is split into when no GPU serves (for testing the
    # multi-device path; on a real CPU they share the same cores).
    cpu_devices: int = 1
    # Threads one TensorFlow op may use; 0 is TensorFlow's default (one per core).
    intra_op_threads: int = 0
    # RPCs in progress before gRPC itself refuses new ones with RESOURCE_EXHAUSTED, before
    # any Python runs for them: the cheapest shedding under overload. 0: no limit.
    max_concurrent_rpcs: int = 0
    # Move loaded models out of Python's garbage collector (gc.freeze): a full collection
    # over one takes ~160 ms on two cores. Process-wide, so turn it off when several
    # servers share one process (as the tests do).
    freeze_gc: bool = True
    # Largest gRPC message accepted, in bytes.
    max_message_bytes: int = 16 * 1024 * 1024
    # Seconds of silence on a connection before the server pings the client to check it is
    # still there (HTTP/2 keepalive). Clients may ping as often as every 10 s.
    keepalive_time_s: float = 60.0
    # Seconds the server waits for the answer to a keepalive ping before it closes the
    # connection and ends its calls (a probe lost without a word).
    keepalive_timeout_s: float = 20.0
    # Seconds after which the server asks a client to reconnect (GOAWAY), so that long-lived
    # probe streams spread over replicas added by a scale-out; 0: connections live forever.
    max_connection_age_s: float = 0.0
    # Seconds calls still running on a connection past its maximum age may go on, before they
    # end with UNAVAILABLE (the probe agent reconnects and resends what was not acknowledged).
    max_connection_age_grace_s: float = 30.0
    # Neighbours returned when a request asks for none.
    default_top_k: int = 3
    # How long a node's latest diagnosis is kept in Redis, in seconds.
    node_state_ttl_s: int = 24 * 3600
    # Where model artifacts fetched from the registry are unpacked.
    model_cache_dir: str = "/tmp/faultprint-models"
    # Public keys (PEM files, comma-separated; `faultprint-trainer keygen` makes a pair) that
    # a model must be signed with to be served: an unsigned, altered or otherwise-signed
    # registry version is rejected and rolled back, and a model_source directory needs a
    # valid signature.json. Empty: signatures are not checked (start-up warns).
    model_trusted_keys: str = ""
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
    # The components' own options, each declared and documented on its class.
    batching: BatchSchedulerOptions = field(default_factory=BatchSchedulerOptions)
    runner: RunnerOptions = field(default_factory=RunnerOptions)
    shadow: ShadowOptions = field(default_factory=ShadowOptions)
    monitoring: MonitorOptions = field(default_factory=MonitorOptions)
    life_cycle: LifeCycleOptions = field(default_factory=LifeCycleOptions)
    onap: OnapOptions = field(default_factory=OnapOptions)
    security: SecurityOptions = field(default_factory=SecurityOptions)

    def __post_init__(self) -> None:
        if self.telemetry_exporter not in TELEMETRY_EXPORTERS:
            raise SettingsError(
                f"telemetry_exporter is {self.telemetry_exporter!r}; allowed: {TELEMETRY_EXPORTERS}"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"redis_url {self.redis_url!r} must start with redis://, rediss:// or unix://"
            )
        if self.health_listen_address and ":" not in self.health_listen_address:
            raise SettingsError(f"health_listen_address {self.health_listen_address!r} must be host:port")
        if ":" not in self.listen_address:
            raise SettingsError(f"listen_address {self.listen_address!r} must be host:port")
        if self.max_message_bytes < 64 * 1024:
            raise SettingsError(f"max_message_bytes must be at least 65536, got {self.max_message_bytes}")
        if self.outbox_sweep_interval_s <= 0:
            raise SettingsError(
                f"outbox_sweep_interval_s must be positive, got {self.outbox_sweep_interval_s}"
            )
        if self.redis_cluster not in ("auto", "yes", "no"):
            raise SettingsError(f"redis_cluster must be auto, yes or no, got {self.redis_cluster!r}")
        if not self.redis_prefix or "{" in self.redis_prefix or "}" in self.redis_prefix:
            raise SettingsError(
                f"redis_prefix {self.redis_prefix!r} must be non-empty and hold no '{{' or '}}'"
            )
        if self.default_top_k < 1:
            raise SettingsError(f"default_top_k must be at least 1, got {self.default_top_k}")
        if min(self.keepalive_time_s, self.keepalive_timeout_s) <= 0:
            raise SettingsError("keepalive_time_s and keepalive_timeout_s must be positive")
        if min(self.max_connection_age_s, self.max_connection_age_grace_s) < 0:
            raise SettingsError("max_connection_age_s and max_connection_age_grace_s must be >= 0")
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
        if self.model_trusted_keys and not all(p.strip() for p in self.model_trusted_keys.split(",")):
            raise SettingsError(
                f"model_trusted_keys {self.model_trusted_keys!r} has an empty entry: give PEM files, "
                "separated by commas"
            )
        if not -1 <= self.worker_index < self.workers:
            raise SettingsError(f"worker_index {self.worker_index} is not a worker of {self.workers}")

    @property
    def supervises(self) -> bool:
        """Whether this process starts and watches workers rather than serving itself."""
        return self.workers > 1 and self.worker_index < 0

    @classmethod
    def of(cls, **values: Any) -> ServerSettings:
        """Settings from options named as flags and variables name them (max_batch_size,
        shadow_sample_rate, ...), each routed to the component that declares it."""
        own: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {component: {} for component in _COMPONENTS}
        for name, value in values.items():
            option = _OPTIONS_BY_NAME.get(name)
            if option is None:
                raise SettingsError(f"unknown setting {name!r}; see --help")
            (parts[option.component] if option.component else own)[option.field] = value
        for component, (_, options_class) in _COMPONENTS.items():
            try:
                own[component] = options_class(**parts[component])
            except ValueError as exc:
                raise SettingsError(str(exc)) from exc
        return cls(**own)

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
    ) -> ServerSettings:
        """Flags override FAULTPRINT_* variables, which override the defaults."""
        env = dict(os.environ if env is None else env)
        args = parser().parse_args(argv)
        values: dict[str, object] = {}
        for option in OPTIONS:
            raw = getattr(args, option.name)
            if raw is None:
                raw = env.get(option.variable)
            if raw is None and option.name == "redis_url":
                raw = env.get("REDIS_URL")
            if raw is not None:
                values[option.name] = _parse(option.name, str(raw), option.kind)
        return cls.of(**values)


# Component options as ServerSettings holds them: the field, and the prefix of their flags.
_COMPONENTS: dict[str, tuple[str, type]] = {
    "batching": ("", BatchSchedulerOptions),
    "runner": ("", RunnerOptions),
    "shadow": ("shadow_", ShadowOptions),
    "monitoring": ("", MonitorOptions),
    "life_cycle": ("incident_", LifeCycleOptions),
    "onap": ("onap_", OnapOptions),
    "security": ("", SecurityOptions),
}


@dataclass(frozen=True)
class Option:
    """One setting as flags, variables and the docs show it."""

    # Its flat name: --name-with-dashes, FAULTPRINT_NAME.
    name: str
    # The ServerSettings field of the component that declares it ('' for the server's own).
    component: str
    # The field on the declaring class.
    field: str
    # The field's type, as written.
    kind: str
    default: object
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return f"FAULTPRINT_{self.name.upper()}"


def declared_help(options_class: type) -> dict[str, str]:
    """The comment lines just above each field of a dataclass, joined: its documentation."""
    source = textwrap.dedent(inspect.getsource(options_class))
    lines = source.splitlines()
    helps = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comments: list[str] = []
            row = node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#"):
                comments.insert(0, lines[row].strip().lstrip("#").strip())
                row -= 1
            helps[node.target.id] = " ".join(comments)
    return helps


def _options() -> tuple[Option, ...]:
    declared = []
    for component, (prefix, options_class) in {"": ("", ServerSettings), **_COMPONENTS}.items():
        helps = declared_help(options_class)
        for f in fields(options_class):
            if f.name in _COMPONENTS and options_class is ServerSettings:
                continue
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            declared.append(Option(prefix + f.name, component, f.name, str(f.type), default, helps[f.name]))
    return tuple(declared)


OPTIONS = _options()
_OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


def _shown(value: object) -> str:
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "(none)"
    return str(value)


def parser() -> argparse.ArgumentParser:
    """The server's command line, every option with its meaning, default and variable."""
    command = argparse.ArgumentParser(
        prog="faultprint-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    command.add_argument("--version", action="version", version=f"faultprint-server {_version()}")
    command.add_argument(
        "--options-table", action="store_true", help="print the options as a markdown table and exit"
    )
    for option in OPTIONS:
        command.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            help=f"{option.help} Default: {_shown(option.default)}. Variable: {option.variable}.",
        )
    return command


def options_table() -> str:
    """The options as the markdown table of docs/configuration.md."""
    rows = ["| flag (variable FAULTPRINT_...) | default | meaning |", "|---|---|---|"]
    for option in OPTIONS:
        rows.append(f"| `{option.flag}` | `{_shown(option.default)}` | {option.help} |")
    return "\n".join(rows) + "\n"


# Where the options table stands in docs/configuration.md.
TABLE_BEGIN = "<!-- options:begin -->\n"
TABLE_END = "<!-- options:end -->"


def with_options_table(markdown: str) -> str:
    """markdown with the text between the options markers replaced by options_table()."""
    head, found, rest = markdown.partition(TABLE_BEGIN)
    if not found or TABLE_END not in rest:
        raise ValueError(f"no {TABLE_BEGIN.strip()} ... {TABLE_END} block to fill")
    return head + TABLE_BEGIN + options_table() + TABLE_END + rest.split(TABLE_END, 1)[1]


def _version() -> str:
    from faultprint import __version__

    return __version__


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
