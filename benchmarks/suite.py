"""The benchmark suite (`make bench`, or `make bench-quick` for a smoke run under 3 minutes).

For each encoder size (original 2 x LSTM-512, small 2 x LSTM-64):
1. Ceiling: the encoder alone, in process, at each allowed batch size (ceiling.py), with
   one call at a time and with one replica per core computing at once, the best counting;
   in a full run timed again at the max batch size just before and just after each C = 64
   point; the throughput bars divide by the mean of those two.
2. Server under load: closed-loop probes (C = 1, 16, 64, 256), unary and streaming,
   from a separate process (load_generator.py) over loopback gRPC to a server
   process; mean batch size comes from the server's own metrics (Prometheus scrape).
3. Naive baseline: the same server with batching off (max batch size 1, one batch in flight,
   every other setting as the batching server has it).
4. Overload: open-loop unary calls with deadlines at 2 x the measured capacity, with
   the server's RSS sampled every second. The probes throttle themselves as deployed
   probe agents do (client/throttle.py, its default ratio; --overload-throttle-ratio
   sets another, 0 turns it off): the offered load stays 2 x capacity, and what the
   client refuses locally is counted as CLIENT_THROTTLED.

Writes benchmarks/results/suite[-quick].json, a markdown table (.md) and a plot (.png),
checks the bars of the batching issue, and prints the table. ``--points 64,256`` runs only
those closed-loop points on the batching server (no naive baseline, no overload) and writes
suite[-quick]-points.*. Needs REDIS_URL (the Makefile wraps it in scripts/with-redis.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.report import check_bars, write_markdown, write_plot  # noqa: E402
from faultprint.client.throttle import ThrottleOptions  # noqa: E402


@dataclass(frozen=True)
class ModelPlan:
    """One encoder size and the server settings it is benchmarked with."""

    name: str
    lstm_units: int
    dense_units: int
    # Server batching settings (flags of `python -m faultprint.server`).
    server_flags: dict[str, object]
    # Per-call deadline of the overload run, in ms.
    overload_deadline_ms: float

    @property
    def max_batch_size(self) -> int:
        return int(self.server_flags["max-batch-size"])  # type: ignore[call-overload]

    @property
    def workers(self) -> int:
        return int(self.server_flags.get("workers", 1))  # type: ignore[call-overload]

    def connections(self, concurrency: int) -> int:
        """Connections the probes of a load point use: one shared, as one probe host would
        open; with several workers, one per probe, as separate probes would, since workers
        share out connections, not calls."""
        return concurrency if self.workers > 1 else 1

    @property
    def naive_flags(self) -> dict[str, object]:
        """The same server with batching off: one window per encoder call, one call at a time,
        and every other setting (TensorFlow threads included) as the batching server has it."""
        flags = {k: v for k, v in self.server_flags.items() if k != "allowed-batch-sizes"}
        return {**flags, "max-batch-size": 1, "batches-in-flight": 1}

    @property
    def ceiling_layouts(self) -> str:
        """The layouts the ceiling is timed in (ceiling.py --instances): one encoder call at a
        time, one per core, and the plan's own devices; the best counts, so a ratio to the
        ceiling is held against what the machine can do, whatever the plan chose."""
        devices = int(self.server_flags.get("cpu-devices", 1))  # type: ignore[call-overload]
        return ",".join(map(str, sorted({1, os.cpu_count() or 1, devices})))

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The padded sizes the server uses, so the ceiling is measured at each of them."""
        from faultprint.server.batching.scheduler import BatchSchedulerOptions

        allowed = str(self.server_flags.get("allowed-batch-sizes", ""))
        sizes = tuple(int(x) for x in allowed.split(",") if x)
        return BatchSchedulerOptions(
            max_batch_size=self.max_batch_size, allowed_batch_sizes=sizes
        ).batch_sizes


# The original encoder runs one replica per core, each on its own logical CPU device and
# thread: one of its calls at a time leaves part of a core idle, and at C = 64 two side by side
# served 14-32 % more (benchmarks/archive/2026-11-21.md). Each device takes one batch at a
# time: at C = 64 that served as much as two in flight, with a p99 lower in every round
# (benchmarks/archive/2026-11-21.md and 2026-11-22.md).
# The small encoder's server is bound by its event loop, not by compute, and a second replica
# gave it nothing measurable, so it keeps one. Its batches stop at 32: on a 2-core machine
# the encoder computed as many windows/s at 32 as at 64 (30 600 and 30 900, two at once), and
# batches of 32 let the stream at C = 64 split into two groups that take turns, one computing
# while the loop answers the other: 7 652 against 6 922 windows/s (stream C = 64), 4 773
# against 4 310 (unary C = 64), 4 364 against 3 920 (unary C = 256), and 7 967 against 8 113
# (stream C = 256, within the spread) (benchmarks/archive/2026-12-06.md).
CPU_DEVICES = os.cpu_count() or 1

PLANS = {
    "original": ModelPlan(
        "original", 512, 512,
        {"max-batch-size": 32, "max-queue-delay-ms": 50, "batches-in-flight": 1, "max-queue-size": 2048,
         "intra-op-threads": 1, "cpu-devices": CPU_DEVICES,
         "allowed-batch-sizes": "1,2,4,8,12,16,20,24,28,32"},
        overload_deadline_ms=1000,
    ),
    "small": ModelPlan(
        "small", 64, 64,
        {"max-batch-size": 32, "max-queue-delay-ms": 10, "batches-in-flight": 2, "max-queue-size": 4096,
         "intra-op-threads": 1, "allowed-batch-sizes": "1,2,4,8,16,24,32"},
        overload_deadline_ms=200,
    ),
}  # fmt: skip


@dataclass
class SuiteConfig:
    quick: bool
    models: list[str]
    concurrencies: list[int]
    modes: list[str]
    naive_concurrencies: list[int]
    point_s: float
    warmup_s: float
    overload_s: float
    ceiling_s: float
    out_stem: str
    extra: dict[str, Any] = field(default_factory=dict)
    # Time the ceiling again at the max batch size just before and after each bar point (C = 64).
    ceiling_beside: bool = False
    # Who sends closed loops (load_generator.py --generator): native or python; empty: its default.
    generator: str = ""

    @classmethod
    def build(cls, quick: bool, models: list[str]) -> SuiteConfig:
        if quick:
            return cls(True, models, [1, 64], ["unary", "stream"], [64], 2.5, 1.0, 8.0, 0.5, "suite-quick")
        return cls(
            False, models, [1, 16, 64, 256], ["unary", "stream"], [1, 64], 10.0, 3.0, 60.0, 3.0, "suite",
            ceiling_beside=True,
        )  # fmt: skip

    def only_points(self, concurrencies: list[int]) -> SuiteConfig:
        """The same run at these closed-loop concurrencies alone, on the batching server: no
        naive baseline and no overload (overload_s 0)."""
        return replace(self, concurrencies=concurrencies, naive_concurrencies=[], overload_s=0.0,
                       out_stem=f"{self.out_stem}-points")  # fmt: skip


# The concurrency the throughput bars are read at.
BAR_CONCURRENCY = 64


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine(gpus: list[str] | None = None) -> dict[str, Any]:
    """The machine a run is on. GPUs are listed by TensorFlow, imported here (seconds of CPU)
    unless a process that imports it anyway, such as the ceiling's, already listed them."""
    from importlib.metadata import version

    if gpus is None:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "gpus": gpus,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run_ceiling(config: SuiteConfig, plan: ModelPlan, sizes: tuple[int, ...] = ()) -> dict[str, Any]:
    """The encoder alone, in its own process, so the server run that follows starts clean:
    ceiling.py's output, its rows under "results" and the GPUs it saw under "machine".

    A quick run times only the sizes the bars use: 1 and the server's max batch size.
    """
    sizes = sizes or ((1, plan.max_batch_size) if config.quick else plan.batch_sizes)
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    subprocess.run(
        [sys.executable, str(HERE / "ceiling.py"), "--models", plan.name, "--seconds", str(config.ceiling_s),
         "--batch-sizes", ",".join(map(str, sizes)), "--out", str(out),
         "--intra-op-threads", str(plan.server_flags.get("intra-op-threads", 0)),
         "--xla", str(plan.server_flags.get("xla", "auto")), "--instances", plan.ceiling_layouts],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    timed: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    for row in timed["results"]:
        log(
            f"ceiling {plan.name} batch {row['batch_size']}: {row['windows_per_s']:.1f} windows/s "
            f"({row['instances']} at once)"
        )
    return timed


def ceiling_reading(config: SuiteConfig, plan: ModelPlan, concurrency: int) -> float | None:
    """For a point a throughput bar is read at (C = 64, in runs with ceiling_beside: full ones),
    one timing of the ceiling at the max batch size with the server idle; else None."""
    if not config.ceiling_beside or concurrency != BAR_CONCURRENCY:
        return None
    return float(run_ceiling(config, plan, (plan.max_batch_size,))["results"][0]["windows_per_s"])


def run_bar_point(target: str, scraper: MetricsScraper, config: SuiteConfig, plan: ModelPlan,
                  mode: str, concurrency: int) -> dict[str, Any]:  # fmt: skip
    """A load point; for a bar's point, with the ceiling timed just before and just after it.

    The machine's speed drifts by ±20 % over the minutes between the run's first ceiling
    and the point, and by as much between two readings a minute apart, so the bars divide
    by the mean of the two readings around the point.
    """
    before = ceiling_reading(config, plan, concurrency)
    point = run_load(target, scraper, config, mode=mode, concurrency=concurrency,
                     connections=plan.connections(concurrency))  # fmt: skip
    after = ceiling_reading(config, plan, concurrency)
    if before is not None and after is not None:
        point.update(ceiling_before_windows_per_s=before, ceiling_after_windows_per_s=after,
                     ceiling_beside_windows_per_s=(before + after) / 2)  # fmt: skip
    return point


def build_artifact(plan: ModelPlan, root: Path, seed: int = 7, version: str | None = None) -> Path:
    from faultprint.encoder.tower import TowerConfig
    from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS
    from faultprint.trainer.export import export_untrained

    tower = TowerConfig(WINDOW_STEPS, NUM_FEATURES, (plan.lstm_units, plan.lstm_units), plan.dense_units, 10)
    return export_untrained(tower, root, seed=seed, version=version or f"bench-{plan.name}")


class MetricsScraper:
    """Reads a server's metrics from its Prometheus endpoints (one per worker), summed."""

    def __init__(self, *addresses: str) -> None:
        self.urls = [f"http://{address}/metrics" for address in addresses]

    def _families(self) -> list[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        families = []
        for url in self.urls:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            families += text_string_to_metric_families(text)
        return families

    def _sum(
        self, prefix: str, suffix: str, le: float | None = None, families: list[Any] | None = None
    ) -> float:
        """The sum over labels of a metric's samples named ...suffix (a bucket's: at bound le),
        from one scrape (families), or from a new one."""
        return sum(
            sample.value
            for family in (self._families() if families is None else families)
            if family.name.startswith(prefix)
            for sample in family.samples
            if sample.name.endswith(suffix) and (le is None or float(sample.labels["le"]) == le)
        )

    def counter(self, prefix: str) -> float:
        """A counter's total over its labels (0 before it is first incremented)."""
        return self._sum(prefix, "_total")

    def histogram_at_most(self, prefix: str, bound: float) -> float:
        """How many of a histogram's samples were at most bound (a bucket boundary)."""
        return self._sum(prefix, "_bucket", le=bound)

    def histogram_above(self, prefix: str, bound: float) -> float:
        """How many of a histogram's samples exceeded bound (a bucket boundary). The count
        and the bucket come from one scrape: from two, a sample recorded in between would
        count as a negative one."""
        families = self._families()
        return self._sum(prefix, "_count", families=families) - self._sum(prefix, "_bucket", bound, families)

    def histogram_totals(self, prefix: str) -> tuple[float, float]:
        """The sum and count of a histogram's samples over its labels, from one scrape."""
        families = self._families()
        return self._sum(prefix, "_sum", families=families), self._sum(prefix, "_count", families=families)


def enrol(target: str) -> None:
    """One reference case per simulated condition, so classification does real matching."""
    from faultprint.client import FaultprintClient
    from faultprint.traffic.simulator import CONDITIONS, PROFILES, simulate_windows

    windows, labels = simulate_windows(PROFILES["metro-eu"], CONDITIONS, 1, seed=11)
    with FaultprintClient(target) as client:
        for window, label in zip(windows, labels, strict=True):
            client.create_reference_case("bench", str(label), [window])


def load_generator_command(target: str, **load: object) -> list[str]:
    """The command line of a load_generator.py run against target. Each keyword is one of
    its flags in Python spelling (duration_s=10 is --duration-s 10)."""
    args = [sys.executable, str(HERE / "load_generator.py"), "--target", target]
    for name, value in load.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def generate_load(target: str, **load: object) -> dict[str, Any]:
    """One load_generator.py run against target, in its own process; its JSON result."""
    args = load_generator_command(target, **load)
    done = subprocess.run(args, check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_load(target: str, scraper: MetricsScraper, config: SuiteConfig, **load: object) -> dict[str, Any]:
    load.setdefault("duration_s", config.point_s)
    if config.generator:
        load.setdefault("generator", config.generator)
    histograms = ("faultprint_batch_size", "faultprint_batch_compute")
    before = [scraper.histogram_totals(h) for h in histograms]
    result = generate_load(target, warmup_s=config.warmup_s, **load)
    after = [scraper.histogram_totals(h) for h in histograms]
    # Per batch, over this run alone: the mean batch size, and the encoder's mean compute
    # time inside the server (the C = 1 bar compares latency with it, measured in the same run).
    (size_sum, batches), (compute_sum, _) = (
        (a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)
    )
    result["mean_batch_size"] = size_sum / batches if batches else 0.0
    result["mean_compute_ms"] = compute_sum * 1000 / batches if batches else 0.0  # the server's seconds
    return result


# A loop-lag sample above this (a bucket boundary of the histogram), in ms, is a stall.
_STALL_MS = 50.0


class RssSampler(threading.Thread):
    """Samples a server's resident memory once a second, and how late each sample woke.

    A wake-up far later than its second means the whole machine stalled (every process
    on it waits too), which tells such a stall from one inside the server.
    """

    def __init__(self, server: Any) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[tuple[float, int]] = []
        self.wake_lag_ms: list[float] = []
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        due = time.monotonic() + 1.0
        while not self._halt.wait(max(0.0, due - time.monotonic())):
            self.wake_lag_ms.append((time.monotonic() - due) * 1000)
            self.samples.append((time.monotonic() - self._t0, self.server.rss_bytes()))
            due += 1.0

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join()
        return self.samples


def serve_and_measure(config: SuiteConfig, plan: ModelPlan, artifact: Path, naive: bool) -> dict[str, Any]:
    from benchmarks.launcher import ServerProcess, free_ports_in_a_row

    metrics_ports = free_ports_in_a_row(plan.workers)  # worker i serves metrics at the first + i
    metrics_address = f"127.0.0.1:{metrics_ports[0]}"
    flags: dict[str, object] = {
        "model-source": artifact,
        "telemetry-exporter": "prometheus",
        "metrics-address": metrics_address,
        **(plan.naive_flags if naive else plan.server_flags),
    }
    prefix = f"faultprint-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FAULTPRINT_REDIS_PREFIX": prefix, "TF_CPP_MIN_LOG_LEVEL": "2"}
    kind = "naive" if naive else "batching"
    logfile = RESULTS / f"server-{plan.name}-{kind}.log"
    points: list[dict[str, Any]] = []
    overload: dict[str, Any] = {}
    try:
        with open(logfile, "w") as log_out, ServerProcess(flags, env, log_out) as server:
            enrol(server.target)
            scraper = MetricsScraper(*(f"127.0.0.1:{port}" for port in metrics_ports))
            concurrencies = config.naive_concurrencies if naive else config.concurrencies
            for mode in config.modes:
                for c in concurrencies:
                    if naive:
                        point = run_load(server.target, scraper, config, mode=mode, concurrency=c,
                                         connections=plan.connections(c))  # fmt: skip
                    else:
                        point = run_bar_point(server.target, scraper, config, plan, mode, c)
                    point.update(model=plan.name, server=kind)
                    points.append(point)
                    log(f"{plan.name} {kind} {mode} C={c}: {point['windows_per_s']:.1f} w/s, "
                        f"p50 {point['p50_ms']:.1f} p99 {point['p99_ms']:.1f} ms, "
                        f"batch {point['mean_batch_size']:.1f} ({point['mean_compute_ms']:.1f} ms), "
                        f"{point['outcomes']}")  # fmt: skip
            if not naive and config.overload_s > 0:
                overload = run_overload(server, scraper, config, plan, points)
    finally:
        _delete_keys(prefix)
    return {"points": points, "overload": overload, "server_flags": {k: str(v) for k, v in flags.items()}}


def run_overload(server: Any, scraper: MetricsScraper, config: SuiteConfig, plan: ModelPlan,
                 points: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    capacity = max(p["windows_per_s"] for p in points if p["mode"] == "unary")
    rate = 2 * capacity
    sampler = RssSampler(server)
    sampler.start()
    late_before = scraper.counter("faultprint_requests_late")
    left_before = _deadline_left(scraper)
    arrival_before = _deadline_left(scraper, _ARRIVAL, _ARRIVAL_BOUNDS_MS)
    arrivals_before = scraper.histogram_totals(_ARRIVAL)[1]
    stalls_before = scraper.histogram_above("faultprint_event_loop_lag", _STALL_MS / 1000)
    result = run_load(server.target, scraper, config, mode="unary", rate=f"{rate:.1f}",
                      deadline_ms=plan.overload_deadline_ms, duration_s=config.overload_s,
                      throttle_ratio=config.extra.get("overload_throttle_ratio", 0.0),
                      connections=plan.connections(64))  # fmt: skip
    samples = sampler.stop()
    # Windows whose batch finished after their deadline, by the server's clock (answered
    # DEADLINE_EXCEEDED); the client's LATE also counts time spent in the client and transport.
    result["server_late"] = scraper.counter("faultprint_requests_late") - late_before
    # Successful answers by how little of their deadline was left when the server had them
    # ready: those under the answer margin may reach the caller too late.
    result["answers_ready_with_ms_left"] = _since(_deadline_left(scraper), left_before)
    # Calls by how much of their deadline was left when they reached faultprint's handlers:
    # a call that spent most of it queued inside gRPC can no longer be answered in time.
    arrivals = _deadline_left(scraper, _ARRIVAL, _ARRIVAL_BOUNDS_MS)
    result["calls_arriving_with_ms_left"] = _since(arrivals, arrival_before)
    result["calls_arriving"] = scraper.histogram_totals(_ARRIVAL)[1] - arrivals_before
    # Times the server's event loop ran its 100 ms timer more than _STALL_MS late: a stall
    # inside the server that every call in flight waited through.
    stalls = scraper.histogram_above("faultprint_event_loop_lag", _STALL_MS / 1000)
    result["server_loop_stalls"] = stalls - stalls_before
    settled = [rss for t, rss in samples if t >= config.warmup_s + 5] or [rss for _, rss in samples]
    # RSS swings by a few per cent from one second to the next with the load's bursts, so
    # growth compares the medians of the first and the last 10 s (a third of a shorter run),
    # not two single samples.
    edge = max(1, min(10, len(settled) // 3))
    first, last = statistics.median(settled[:edge]), statistics.median(settled[-edge:])
    result.update(
        model=plan.name, capacity_windows_per_s=capacity, offered_windows_per_s=rate,
        rss_mb_start=first / 2**20, rss_mb_end=last / 2**20, rss_mb_max=max(settled) / 2**20,
        rss_samples=[(round(t, 1), round(rss / 2**20, 1)) for t, rss in samples],
        sampler_wake_lag_ms=[round(lag, 1) for lag in sampler.wake_lag_ms],
    )  # fmt: skip
    answered = sum(v for k, v in result["outcomes"].items() if k != "offered")
    result["rejection_rate"] = 1 - result["ok"] / answered if answered else 0.0
    log(f"{plan.name} overload at {rate:.0f} w/s offered: {result['outcomes']}, accepted p99 "
        f"{result['p99_ms']:.1f} ms (deadline {plan.overload_deadline_ms:.0f}), RSS "
        f"{result['rss_mb_start']:.0f} -> {result['rss_mb_end']:.0f} MB")  # fmt: skip
    return result


_READY = "faultprint_rpc_deadline_left"
_READY_BOUNDS_MS = (0, 5, 10, 20)
_ARRIVAL = "faultprint_rpc_deadline_on_arrival"
_ARRIVAL_BOUNDS_MS = (20, 50, 100)


def _deadline_left(
    scraper: MetricsScraper, name: str = _READY, bounds: tuple[int, ...] = _READY_BOUNDS_MS
) -> dict[float, float]:
    """Cumulative counts of a deadline histogram's samples at or under each bound (ms; the
    server's buckets are in seconds)."""
    return {bound: scraper.histogram_at_most(name, bound / 1000) for bound in bounds}


def _since(after: dict[float, float], before: dict[float, float]) -> dict[str, float]:
    return {f"<={bound:g}": count - before[bound] for bound, count in after.items()}


@contextmanager
def plan_server(plan: ModelPlan, label: str) -> Iterator[Any]:
    """A server process with the plan's settings, serving an untrained artifact of its
    size, with reference cases enrolled under a Redis prefix of its own that is deleted
    afterwards (the profiler and the overload tool use it)."""
    from benchmarks.launcher import ServerProcess

    prefix = f"faultprint-{label}-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FAULTPRINT_REDIS_PREFIX": prefix, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        artifact = build_artifact(plan, Path(tmp))
        try:
            with ServerProcess({"model-source": artifact, **plan.server_flags}, env) as server:
                enrol(server.target)
                yield server
        finally:
            _delete_keys(prefix)


def _delete_keys(prefix: str) -> None:
    from faultprint.registry.connection import connect, delete_deployment
    from faultprint.registry.layout import RedisLayout

    with connect(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")) as client:
        delete_deployment(client, RedisLayout(prefix))


def add_load_point_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that name one load point on one server, for the tools that drive a single
    server (profile.py, compare.py): closed-loop probes, or an open loop with --rate."""
    parser.add_argument("--model", default="small", choices=sorted(PLANS))
    parser.add_argument("--mode", default="stream", choices=("unary", "stream"))
    parser.add_argument("--concurrency", type=int, default=64,
                        help="closed-loop probes; with --rate and --mode stream, the streams")  # fmt: skip
    parser.add_argument("--rate", type=float, default=0.0,
                        help="windows/s offered, each with --deadline-ms (an overload)")  # fmt: skip
    parser.add_argument("--deadline-ms", type=float, default=200.0, help="each call's deadline with --rate")
    parser.add_argument("--throttle-ratio", type=float, default=ThrottleOptions().ratio,
                        help="the probes' client-side throttling ratio with --rate (0: off)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=1,
                        help="connections the probes are spread over (use one per probe against "
                             "a server with several workers)")  # fmt: skip


def load_point(args: argparse.Namespace) -> dict[str, object]:
    """load_generator.py's flags, in Python spelling, for the point add_load_point_arguments named."""
    point: dict[str, object] = {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "connections": args.connections,
    }
    if args.rate:
        point.update(rate=args.rate, deadline_ms=args.deadline_ms, throttle_ratio=args.throttle_ratio)
    return point


def describe_load_point(args: argparse.Namespace) -> str:
    """The point add_load_point_arguments named, in words, for a report's heading."""
    if args.rate:
        point = f"{args.mode}, {args.rate:g} windows/s offered with {args.deadline_ms:g} ms deadlines"
    else:
        point = f"{args.mode}, C={args.concurrency}"
    return point + (f", {args.connections} connections" if args.connections > 1 else "")


def with_flags(plan: ModelPlan, assignments: list[str]) -> ModelPlan:
    """The plan with server settings given on the command line (NAME=VALUE, flag spelling)."""
    flags = dict(plan.server_flags)
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep:
            raise SystemExit(f"--server-flag {assignment!r}: expected NAME=VALUE")
        flags[name.strip().lstrip("-").replace("_", "-")] = value.strip()
    return replace(plan, server_flags=flags)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 3 minutes")
    parser.add_argument("--models", default="original,small")
    parser.add_argument(
        "--overload-throttle-ratio",
        type=float,
        default=ThrottleOptions().ratio,
        help="overload probes' client-side throttling ratio (default: the client library's; 0: off)",
    )
    parser.add_argument("--server-flag", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting for all plans and ceilings (xla=off); repeatable")  # fmt: skip
    parser.add_argument("--points", default="", metavar="C[,C...]",
                        help="only these closed-loop concurrencies, unary and stream, on the batching "
                             "server: no naive baseline, no overload")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = SuiteConfig.build(args.quick, args.models.split(","))
    if args.points:
        config = config.only_points([int(c) for c in args.points.split(",")])
    config.extra["overload_throttle_ratio"] = args.overload_throttle_ratio
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {"quick": config.quick, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in config.models:
            plan = with_flags(PLANS[name], args.server_flag)
            timed = run_ceiling(config, plan)
            ceiling = timed["results"]
            report.setdefault("machine", machine(timed["machine"]["gpus"]))
            artifact = build_artifact(plan, Path(tmp))
            batching = serve_and_measure(config, plan, artifact, naive=False)
            naive = (
                serve_and_measure(config, plan, artifact, naive=True)
                if config.naive_concurrencies
                else {"points": [], "overload": {}, "server_flags": {}}
            )
            report["models"][name] = {
                "ceiling": ceiling, "max_batch_size": plan.max_batch_size,
                "batching": batching, "naive": naive,
            }  # fmt: skip
    report["wall_s"] = time.monotonic() - started
    report["bars"] = check_bars(report)
    stem = RESULTS / config.out_stem
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    markdown = write_markdown(report, stem.with_suffix(".md"))
    write_plot(report, stem.with_suffix(".png"))
    print(markdown)
    log(f"suite done in {report['wall_s']:.0f} s: {stem}.json/.md/.png")
    return 0 if all(bar["pass"] for bar in report["bars"]) else 1


if __name__ == "__main__":
    sys.exit(main())
