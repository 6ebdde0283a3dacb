"""Simulated probe load against a faultprint server, in its own process, over loopback gRPC.

Closed loop: C probes each send a window and send the next when the answer arrives,
by unary ClassifyWindow calls or each on its own StreamClassifyWindows stream, for
--duration-s after the warm-up, or until SIGTERM ends the run sooner.
Open loop (--rate): windows are offered at a fixed rate with a per-call deadline,
whatever the server's pace, to measure overload behaviour: unary calls from distinct
nodes, or (--mode stream) --concurrency streams whose windows each carry a timeout.

Closed-loop runs go through the native generator (benchmarks/native/load_generator.cc,
built by `make native-load`) unless --generator python: this process then only prepares the
windows and waits. The Python probes cost about as much CPU per window as the server's own
gRPC layer, on the same cores as the server (benchmarks/archive/2026-12-06.md). Open-loop
runs and --record stay in Python: they use the client library's throttling and read each
answer's model version.

Prints one JSON object: counts by outcome, throughput and latency percentiles of the
requests that completed inside the measurement window (after a warm-up), and which
generator ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from faultprint.client import AsyncFaultprintClient, StreamItem, ThrottleOptions, encode_window
from faultprint.client.throttle import THROTTLED_DETAILS
from faultprint.server.loop_lag import LoopLagMonitor
from faultprint.traffic.simulator import CONDITIONS, PROFILES, simulate_windows
from faultprint.v1 import window_pb2

# Cap on calls an open-loop run keeps outstanding, so a stalled server cannot exhaust the client.
MAX_OUTSTANDING = 8192

NATIVE_GENERATOR = Path(__file__).resolve().parent.parent / "build" / "native" / "load_generator"


@dataclass
class Tally:
    """Outcomes of the calls that finished inside the measurement window."""

    measure_from: float
    measure_to: float
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    # With --record: (finished, Unix s; latency, ms; outcome; model version) of every call.
    calls: list[tuple[float, float, str, str]] | None = None
    # Calls by outcome and by whole second of the run (warm-up included), to show when
    # failures happened: at the start, in bursts, or spread out.
    timeline: Counter[tuple[str, int]] = field(default_factory=Counter)
    started_at: float = 0.0
    # The generator's own event-loop lag, in ms, worst per second of the run: a call this
    # process sends or reads late is late however fast the server answered.
    loop_lag_ms: dict[int, float] = field(default_factory=dict)

    @classmethod
    def starting_now(cls, args: argparse.Namespace) -> tuple[float, Tally]:
        """The run's start, and a tally measuring from after its warm-up for its duration."""
        start = time.perf_counter()
        tally = cls(start + args.warmup_s, start + args.warmup_s + args.duration_s, started_at=start)
        if getattr(args, "record", None):
            tally.calls = []
        return start, tally

    def add(self, started: float, outcome: str, version: str = "") -> None:
        finished = time.perf_counter()
        if self.calls is not None:
            self.calls.append((time.time(), (finished - started) * 1000, outcome, version))
        self.timeline[outcome, int(finished - self.started_at)] += 1
        if self.measure_from <= finished <= self.measure_to:
            self.outcomes[outcome] += 1
            if outcome == "OK":
                self.latencies_ms.append((finished - started) * 1000)

    def add_loop_lags(self, samples: list[tuple[float, float]]) -> None:
        """(perf_counter time, lag in ms) samples of the generator's loop, kept as the worst per second."""
        for at, lag_ms in samples:
            second = int(at - self.started_at)
            self.loop_lag_ms[second] = max(lag_ms, self.loop_lag_ms.get(second, 0.0))

    def summary(self) -> dict[str, object]:
        seconds = self.measure_to - self.measure_from
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {
            "seconds": seconds,
            "ok": self.outcomes["OK"],
            "outcomes": dict(self.outcomes),
            "windows_per_s": self.outcomes["OK"] / seconds,
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()),
            "timeline": self._timeline(),
            "generator_loop_lag_ms": [
                round(self.loop_lag_ms.get(second, 0.0), 1)
                for second in range(int(self.measure_to - self.started_at) + 1)
            ],
        }

    def _timeline(self) -> dict[str, list[int]]:
        """Calls per outcome in each second of the run, from its start (warm-up included)."""
        seconds = int(self.measure_to - self.started_at) + 1
        by_outcome: dict[str, list[int]] = {}
        for (outcome, second), count in self.timeline.items():
            if second < seconds:
                by_outcome.setdefault(outcome, [0] * seconds)[second] += count
        return by_outcome


def outcome_of(exc: grpc.aio.AioRpcError) -> str:
    """The status name; a deadline enforced by the client's own timer is "LATE" (no answer in time),
    a call the client's adaptive throttling refused is "CLIENT_THROTTLED"."""
    if exc.details() == THROTTLED_DETAILS:
        return "CLIENT_THROTTLED"
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and (exc.details() or "") == "Deadline Exceeded":
        return "LATE"
    return code.name


Windows = list[window_pb2.Window]
# The probes' clients: probe p uses clients[p % len(clients)], each on its own connection.
Clients = list[AsyncFaultprintClient]


async def unary_probe(client: AsyncFaultprintClient, args: argparse.Namespace, windows: Windows,
                      probe: int, tally: Tally, stop: asyncio.Event) -> None:  # fmt: skip
    node, i = f"probe-{probe}", probe
    while not stop.is_set():
        started = time.perf_counter()
        try:
            diagnosis = await client.classify(args.network, node, windows[i % len(windows)])
            tally.add(started, "OK", diagnosis.model_version)
        except grpc.aio.AioRpcError as exc:
            tally.add(started, outcome_of(exc))
        i += 1


async def stream_probe(client: AsyncFaultprintClient, args: argparse.Namespace, windows: Windows,
                       probe: int, tally: Tally, stop: asyncio.Event) -> None:  # fmt: skip
    stream = client.open_stream()
    node, i = f"probe-{probe}", probe
    try:
        while not stop.is_set():
            started = time.perf_counter()
            await stream.send(StreamItem(args.network, node, windows[i % len(windows)], sequence=i))
            answer = await stream.receive()
            outcome = "OK" if answer.HasField("diagnosis") else f"STREAM_ERROR_{answer.error.code}"
            tally.add(started, outcome, answer.diagnosis.model_version)
            i += 1
        await stream.close()
    finally:
        stream.cancel()


async def closed_loop(clients: Clients, args: argparse.Namespace, windows: list[window_pb2.Window]) -> Tally:
    _, tally = Tally.starting_now(args)
    stop = asyncio.Event()
    probe = unary_probe if args.mode == "unary" else stream_probe
    tasks = [
        asyncio.create_task(probe(clients[p % len(clients)], args, windows, p, tally, stop))
        for p in range(args.concurrency)
    ]
    await until_done_or_told(args.warmup_s + args.duration_s, tally)
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    return tally


async def until_done_or_told(seconds: float, tally: Tally) -> None:
    """Waits out a closed-loop run, or less if SIGTERM asks it to end: a caller that waits on
    an event of unknown length (swap.py, a model swap) ends the run once it has seen enough.
    The measurement window then ends at the signal."""
    told = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, told.set)
    try:
        await asyncio.wait_for(told.wait(), seconds)
        tally.measure_to = min(tally.measure_to, time.perf_counter())
    except TimeoutError:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


async def open_stream_probe(client: AsyncFaultprintClient, args: argparse.Namespace, windows: Windows,
                            probe: int, tally: Tally, start: float) -> None:  # fmt: skip
    """One probe's stream, sending on a fixed schedule; each window carries args.deadline_ms.

    A diagnosis that comes back after its deadline counts as LATE. A window the sender
    is already a deadline behind on is not sent (CLIENT_BACKLOG), as a real probe would
    skip a stale minute.
    """
    stream = client.open_stream()
    timeout_s = args.deadline_ms / 1000
    period_s = args.concurrency / args.rate
    sent_at: dict[int, float] = {}

    async def receive() -> None:
        while True:
            try:
                answer = await stream.receive()
            except EOFError:
                return
            started = sent_at.pop(answer.sequence)
            if answer.HasField("diagnosis"):
                in_time = time.perf_counter() - started <= timeout_s
                tally.add(started, "OK" if in_time else "LATE")
            elif answer.error.message == THROTTLED_DETAILS:
                tally.add(started, "CLIENT_THROTTLED")
            else:
                tally.add(started, STATUS_NAMES.get(answer.error.code, f"CODE_{answer.error.code}"))

    receiver = asyncio.create_task(receive())
    node, i = f"node-{probe}", 0
    due = start + period_s * probe / args.concurrency
    try:
        while (now := time.perf_counter()) < tally.measure_to:
            if now < due:
                await asyncio.sleep(due - now)
                continue
            due += period_s
            if now - due > timeout_s:
                tally.add(now, "CLIENT_BACKLOG")
                continue
            sent_at[i] = time.perf_counter()
            item = StreamItem(args.network, node, windows[i % len(windows)], sequence=i, timeout_s=timeout_s)
            await stream.send(item)
            i += 1
        await stream.close()
        await asyncio.wait_for(receiver, timeout=30)
    finally:
        receiver.cancel()
        stream.cancel()


async def open_loop_streams(
    clients: Clients, args: argparse.Namespace, windows: list[window_pb2.Window]
) -> Tally:
    """Offers args.rate windows/s over args.concurrency streams, each window with its deadline."""
    start, tally = Tally.starting_now(args)
    await asyncio.gather(
        *(
            open_stream_probe(clients[p % len(clients)], args, windows, p, tally, start)
            for p in range(args.concurrency)
        )
    )
    tally.outcomes["offered"] = int(args.rate * args.duration_s)
    return tally


async def open_loop(clients: Clients, args: argparse.Namespace, windows: list[window_pb2.Window]) -> Tally:
    """Offers args.rate windows/s from distinct nodes, each call with args.deadline_ms."""
    if args.mode == "stream":
        return await open_loop_streams(clients, args, windows)
    start, tally = Tally.starting_now(args)
    pending: set[asyncio.Task[None]] = set()
    timeout_s = args.deadline_ms / 1000

    async def call(i: int) -> None:
        started = time.perf_counter()
        try:
            await clients[i % len(clients)].classify(
                args.network, f"node-{i % 10_000}", windows[i % len(windows)], timeout_s=timeout_s
            )
            tally.add(started, "OK")
        except grpc.aio.AioRpcError as exc:
            tally.add(started, outcome_of(exc))

    sent = 0
    while (now := time.perf_counter()) < tally.measure_to:
        due = int((now - start) * args.rate)
        while sent < due:
            if len(pending) >= MAX_OUTSTANDING:
                tally.add(now, "CLIENT_BACKLOG")
            else:
                task = asyncio.create_task(call(sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(0.001)
    if pending:
        await asyncio.wait(pending, timeout=30)
    tally.outcomes["offered"] = int(args.rate * args.duration_s)
    return tally


async def model_windows(client: AsyncFaultprintClient, args: argparse.Namespace) -> Windows:
    """Simulated windows cut to the serving model's shape, each encoded once: the generator's
    own CPU, on the same cores as the server, is kept small."""
    info = await client.model_info()
    simulated = simulate_windows(PROFILES[args.profile], CONDITIONS, 8, seed=args.seed)[0]
    return [encode_window(w[: info.steps, : info.features]) for w in simulated]


def pack_windows(windows: Windows) -> bytes:
    """The native generator's input: each window serialized, after its length (uint32, little-endian)."""
    serialized = [window.SerializeToString() for window in windows]
    return b"".join(struct.pack("<I", len(data)) + data for data in serialized)


def native_command(args: argparse.Namespace, windows_path: Path) -> list[str]:
    return [str(NATIVE_GENERATOR), "--target", args.target, "--windows", str(windows_path),
            "--network", args.network, "--mode", args.mode, "--concurrency", str(args.concurrency),
            "--connections", str(args.connections), "--warmup-s", str(args.warmup_s),
            "--duration-s", str(args.duration_s)]  # fmt: skip


def run_native(args: argparse.Namespace) -> dict[str, object]:
    """A closed-loop run by the native generator, with SIGTERM passed on to it."""

    async def windows() -> Windows:
        async with AsyncFaultprintClient(args.target, timeout_s=60) as client:
            return await model_windows(client, args)

    prepared = asyncio.run(windows())
    with tempfile.TemporaryDirectory(prefix="faultprint-load-") as tmp:
        path = Path(tmp) / "windows.bin"
        path.write_bytes(pack_windows(prepared))
        generator = subprocess.Popen(native_command(args, path), stdout=subprocess.PIPE, text=True)
        previous = signal.signal(signal.SIGTERM, lambda *_: generator.send_signal(signal.SIGTERM))
        try:
            out, _ = generator.communicate()
        finally:
            signal.signal(signal.SIGTERM, previous)
    if generator.returncode != 0:
        raise SystemExit(f"load_generator: the native generator exited with {generator.returncode}")
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def uses_native(args: argparse.Namespace) -> bool:
    """Whether this run goes to the native generator: closed-loop runs do, unless told otherwise."""
    python_only = [flag for flag, on in (("--rate", args.rate), ("--record", args.record),
                                         ("--throttle-ratio", args.throttle_ratio)) if on]  # fmt: skip
    if args.generator == "native" and python_only:
        raise ValueError(
            f"the native generator runs closed loops only; {python_only[0]} needs --generator python"
        )
    return args.generator != "python" and not python_only


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    throttle = (
        ThrottleOptions(ratio=args.throttle_ratio, window_s=args.throttle_window_s)
        if args.throttle_ratio
        else None
    )
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                AsyncFaultprintClient(
                    args.target, timeout_s=60, throttle=throttle, own_connection=args.connections > 1
                )
            )
            for _ in range(args.connections)
        ]
        windows = await model_windows(clients[0], args)
        lags: list[tuple[float, float]] = []
        monitor = LoopLagMonitor(lambda lag_s: lags.append((time.perf_counter(), lag_s * 1000)))
        monitor.start()
        try:
            tally = await (open_loop if args.rate else closed_loop)(clients, args, windows)
        finally:
            await monitor.close()
        tally.add_loop_lags(lags)
    if tally.calls is not None:
        await asyncio.to_thread(Path(args.record).write_text, json.dumps(tally.calls))
    return {"generator": "python", "mode": args.mode, "concurrency": args.concurrency, "rate": args.rate,
            "deadline_ms": args.deadline_ms, "throttle_ratio": args.throttle_ratio,
            **tally.summary()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--network", default="bench")
    parser.add_argument("--mode", choices=("unary", "stream"), default="unary")
    parser.add_argument("--concurrency", type=int, default=1, help="probes (closed loop)")
    parser.add_argument("--rate", type=float, default=0.0, help="windows/s offered (open loop)")
    parser.add_argument("--deadline-ms", type=float, default=0.0, help="per-call deadline (open loop)")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--profile", default="metro-eu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--throttle-ratio", type=float, default=0.0,
                        help="client-side adaptive throttling with this ratio (0: off)")  # fmt: skip
    parser.add_argument("--throttle-window-s", type=float, default=ThrottleOptions().window_s,
                        help="seconds of history the client-side throttling counts")  # fmt: skip
    parser.add_argument("--connections", type=int, default=1,
                        help="connections the probes are spread over (a server's workers share out "
                             "connections, not calls)")  # fmt: skip
    parser.add_argument("--record", help="write every call (time, latency, outcome, version) as JSON here")
    parser.add_argument("--generator", choices=("native", "python"),
                        help="who sends a closed loop's windows (default: native; open loops and "
                             "--record always python)")  # fmt: skip
    args = parser.parse_args()
    if args.rate and not args.deadline_ms:
        parser.error("an open-loop run (--rate) needs --deadline-ms")
    try:
        native = uses_native(args)
    except ValueError as exc:
        parser.error(str(exc))
    if native and not NATIVE_GENERATOR.exists():
        sys.exit(f"load_generator: {NATIVE_GENERATOR} is not built; run `make native-load`, "
                 "or pass --generator python")  # fmt: skip
    print(json.dumps(run_native(args) if native else asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
