"""Minute streams: what a diagnosed node-minute costs, and how many nodes one replica follows.

``python -m benchmarks.minute_streams cost`` starts, on loopback, a faultprint server (small
encoder, 2 x LSTM-64, reading network baselines) and a bare grpc.aio server that only
reads the same StreamMinutes messages (benchmarks/bare_minutes.py). It streams the same
requests to each (nodes x minutes, minute-major, as a probe agent sends them): first the
59 minutes that fill every node's window, then the measured minutes, each of which is
diagnosed. Reported, from /proc CPU times (user + system) of each server process over
the measured minutes only:

- the faultprint server's CPU per diagnosed node-minute;
- the bare server's CPU per node-minute;
- the model's own CPU per window: the same windows read against the network's baseline
  and through the same tower at the server's batch size, timed in this process;
- the bar: faultprint <= 3 x bare + encoder;
- wire bytes per node-minute against the window-per-call form (ClassifyWindowRequest and
  StreamClassifyWindowsRequest of the node's hour), bar: at most 1/50.

Redis's own CPU over the same minutes is reported beside. Results go to
benchmarks/results/minute-cost.json.

``python -m benchmarks.minute_streams scale`` fills --nodes nodes' windows by a bulk backfill
(each node's last hour written straight into Redis, in the ring layout the server keeps),
and has the replica restore every node from it (each node's last backfilled minute sent
again), then for --ticks minutes of wall-clock time sends every node's next minute once a
minute (one stream per tick, 1000 node-minutes a request) to one replica (small encoder).
Per tick: the time until every request was acknowledged (each minute stored and diagnosed),
the slowest request's wait, the windows diagnosed; and the server's resident memory and
Redis's memory per node.
Results go to benchmarks/results/minute-scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import redis

from benchmarks.launcher import ROOT, ServerProcess, free_port
from faultprint.client.client import AsyncFaultprintClient, encode_window, minutes_request
from faultprint.registry.connection import delete_deployment
from faultprint.registry.layout import RedisLayout
from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS
from faultprint.traffic.simulator import PROFILES, Episode, simulate_timeline
from faultprint.v1 import probe_service_pb2

RESULTS = ROOT / "benchmarks" / "results"
NETWORK = "bench-minutes"
START = 29_200_000
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def small_artifact(root: Path) -> Path:
    from faultprint.encoder.tower import TowerConfig
    from faultprint.trainer.export import export_untrained

    config = TowerConfig(
        WINDOW_STEPS, NUM_FEATURES, (64, 64), 64, 16, summary_units=16, network_baseline=True
    )
    return export_untrained(config, root, seed=5, version=f"minutes-small-{uuid.uuid4().hex[:6]}")


def node_traffic(distinct: int, minutes: int, seed: int) -> np.ndarray:
    """(distinct, minutes, features) float32 of normal traffic; nodes take them in turn."""
    rng = np.random.default_rng(seed)
    return np.stack([
        simulate_timeline(PROFILES["metro-eu"], START, minutes, [], rng)[0] for _ in range(distinct)
    ]).astype(np.float32)  # fmt: skip


def requests(nodes: int, traffic: np.ndarray, minutes: range, batch: int) -> list[bytes]:
    """Serialized StreamMinutes requests of every node's minutes, minute-major, batch node-minutes each."""
    names = [f"pcscf-{i:06d}" for i in range(nodes)]
    out, sequence = [], 1
    pending_nodes: list[str] = []
    pending_minutes: list[int] = []
    pending_values: list[np.ndarray] = []
    for minute in minutes:
        for i, name in enumerate(names):
            pending_nodes.append(name)
            pending_minutes.append(START + minute)
            pending_values.append(traffic[i % len(traffic), minute])
            if len(pending_nodes) == batch:
                out.append(minutes_request(sequence, NETWORK, pending_nodes, pending_minutes,
                                           np.stack(pending_values)).SerializeToString())  # fmt: skip
                sequence += 1
                pending_nodes, pending_minutes, pending_values = [], [], []
    if pending_nodes:
        out.append(minutes_request(sequence, NETWORK, pending_nodes, pending_minutes,
                                   np.stack(pending_values)).SerializeToString())  # fmt: skip
    return out


async def stream(target: str, payloads: list[bytes], in_flight: int) -> dict[str, float]:
    """Sends serialized requests over one StreamMinutes call, at most in_flight unacknowledged;
    returns the acknowledgements' sums and the slowest acknowledgement's wait in seconds."""
    import grpc

    totals = {"requests": 0, "accepted": 0, "diagnosed": 0, "not_diagnosed": 0, "refused": 0,
              "slowest_ack_s": 0.0}  # fmt: skip
    sent: dict[int, float] = {}
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        call = ch.stream_stream(
            "/faultprint.v1.ProbeService/StreamMinutes",
            request_serializer=lambda b: b,
            response_deserializer=probe_service_pb2.StreamMinutesResponse.FromString,
        )()
        room = asyncio.Semaphore(in_flight)

        async def read() -> None:
            async for ack in call:
                totals["slowest_ack_s"] = max(
                    totals["slowest_ack_s"], time.perf_counter() - sent[ack.sequence]
                )
                totals["requests"] += 1
                totals["accepted"] += ack.accepted
                totals["diagnosed"] += ack.diagnosed
                totals["not_diagnosed"] += ack.not_diagnosed
                totals["refused"] += len(ack.refused)
                room.release()

        reader = asyncio.create_task(read())
        for sequence, payload in enumerate(payloads, start=1):
            await room.acquire()
            sent[sequence] = time.perf_counter()
            await call.write(payload)
        await call.done_writing()
        await reader
    return totals


def encoder_cpu_per_window_s(
    artifact: Path, windows: np.ndarray, batch: int, baseline_of: np.ndarray
) -> float:
    """CPU seconds per window of the model alone, at the server's batch size: reading the window
    against its network's baseline (the model's input, traffic/baseline.py) and the tower."""
    import tensorflow as tf

    from faultprint.encoder.artifact import load_tower, read_metadata
    from faultprint.traffic.baseline import NetworkBaseline

    tower = load_tower(artifact, read_metadata(artifact))
    graph = tf.function(lambda x: tower(x, training=False))
    baseline = NetworkBaseline.fit(baseline_of)
    for _ in range(3):
        graph(baseline.normalise(windows[:batch]))
    started = time.process_time()
    for start in range(0, len(windows) - batch + 1, batch):
        graph(baseline.normalise(windows[start : start + batch])).numpy()
    return (time.process_time() - started) / (len(windows) // batch * batch)


def wire_bytes(traffic: np.ndarray) -> dict[str, float]:
    """Bytes per node-minute of a StreamMinutes request, against one window per call."""
    window = traffic[0, :WINDOW_STEPS]
    minute = minutes_request(1, NETWORK, [f"pcscf-{i:06d}" for i in range(500)], [START] * 500,
                             np.repeat(window[:1], 500, axis=0))  # fmt: skip
    per_minute = minute.ByteSize() / 500
    packed = encode_window(window)
    unary = probe_service_pb2.ClassifyWindowRequest(network=NETWORK, node="pcscf-000001", window=packed)
    streamed = probe_service_pb2.StreamClassifyWindowsRequest(
        sequence=1, network=NETWORK, node="pcscf-000001", window=packed
    )
    unary_bytes, streamed_bytes = unary.ByteSize(), streamed.ByteSize()
    return {"minute_stream_bytes_per_node_minute": per_minute, "classify_window_bytes": unary_bytes,
            "stream_classify_bytes": streamed_bytes, "ratio_unary": unary_bytes / per_minute,
            "ratio_stream": streamed_bytes / per_minute}  # fmt: skip


async def enrol(target: str, traffic: np.ndarray) -> None:
    async with AsyncFaultprintClient(target) as client:
        day = simulate_timeline(PROFILES["metro-eu"], START - 1440, 1440, [], np.random.default_rng(99))[0]
        await client.create_reference_case(
            NETWORK, "normal", list(day.astype(np.float32).reshape(24, 60, -1))
        )
        fault = simulate_timeline(PROFILES["metro-eu"], START - 60, 60, [Episode("hss_unreachable", 0, 60)],
                                  np.random.default_rng(98))[0]  # fmt: skip
        await client.create_reference_case(NETWORK, "hss_unreachable", [fault.astype(np.float32)])


def _profiler(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server into out (collapsed stacks), when out is given."""
    if not out:
        return None
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                             "--nonblocking", "-o", out], stdout=subprocess.DEVNULL)  # fmt: skip


def cost(args: argparse.Namespace) -> dict[str, object]:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-minutes-{uuid.uuid4().hex[:8]}"
    traffic = node_traffic(16, 59 + args.rounds * args.minutes, seed=3)
    env = {**os.environ, "REDIS_URL": redis_url, "FAULTPRINT_REDIS_PREFIX": prefix}
    r = redis.Redis.from_url(redis_url)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        artifact = small_artifact(Path(tmp))
        flags = {"model-source": artifact, "xla": "off", "max-batch-size": args.server_batch,
                 "log-level": "WARNING"}  # fmt: skip
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_minutes", "--port", str(bare_port)],
                                cwd=ROOT, env=env)  # fmt: skip
        bare_target = f"127.0.0.1:{bare_port}"
        try:
            with ServerProcess(flags, env) as server:
                assert server.process is not None
                asyncio.run(enrol(server.target, traffic))
                fill = requests(args.nodes, traffic, range(59), args.batch)
                asyncio.run(stream(server.target, fill, args.in_flight))
                asyncio.run(stream(bare_target, fill, args.in_flight))
                spy = _profiler(server.process.pid, args.profile)
                # Rounds of later minutes, each to both servers in turn: the machine's speed drifts.
                for round_ in range(args.rounds):
                    first = 59 + round_ * args.minutes
                    measured = requests(args.nodes, traffic, range(first, first + args.minutes), args.batch)
                    cpu0, redis0, wall0 = cpu_s(server.process.pid), redis_cpu_s(r), time.perf_counter()
                    totals = asyncio.run(stream(server.target, measured, args.in_flight))
                    wall = time.perf_counter() - wall0
                    server_cpu, redis_cpu = cpu_s(server.process.pid) - cpu0, redis_cpu_s(r) - redis0
                    bare0 = cpu_s(bare.pid)
                    bare_totals = asyncio.run(stream(bare_target, measured, args.in_flight))
                    rows.append({"round": round_, "diagnosed": totals["diagnosed"],
                                 "accepted": totals["accepted"],
                                 "server_cpu_s": server_cpu, "redis_cpu_s": redis_cpu, "server_wall_s": wall,
                                 "bare_minutes": bare_totals["accepted"],
                                 "bare_cpu_s": cpu_s(bare.pid) - bare0})  # fmt: skip
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(30)
        finally:
            bare.terminate()
            bare.wait(10)
            delete_deployment(r, RedisLayout(prefix))
        windows = np.stack([traffic[i % len(traffic), :WINDOW_STEPS] for i in range(2048)])
        encoder_s = encoder_cpu_per_window_s(artifact, windows, args.server_batch, traffic[:, :WINDOW_STEPS])
    per_minute = float(np.median([x["server_cpu_s"] / max(x["diagnosed"], 1) for x in rows]))
    bare_per_minute = float(np.median([x["bare_cpu_s"] / max(x["bare_minutes"], 1) for x in rows]))
    redis_per_minute = float(np.median([x["redis_cpu_s"] / max(x["diagnosed"], 1) for x in rows]))
    wire = wire_bytes(traffic)
    return {
        "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "nodes": args.nodes, "measured_minutes_per_round": args.minutes, "requests_node_minutes": args.batch,
        "server_max_batch_size": args.server_batch, "rounds": rows,
        "server_cpu_us_per_diagnosed_node_minute": per_minute * 1e6,
        "bare_cpu_us_per_node_minute": bare_per_minute * 1e6,
        "encoder_cpu_us_per_window": encoder_s * 1e6,
        "redis_cpu_us_per_node_minute": redis_per_minute * 1e6,
        "bar_cpu_us": (3 * bare_per_minute + encoder_s) * 1e6,
        "cpu_bar_holds": per_minute <= 3 * bare_per_minute + encoder_s,
        **wire, "wire_bar_holds": wire["ratio_unary"] >= 50,
    }  # fmt: skip


def backfill(client: redis.Redis, prefix: str, nodes: int, traffic: np.ndarray) -> None:
    """Writes each node's first hour straight into Redis as the ring the server restores."""
    from faultprint.server.monitoring.node_windows import row_dtype

    layout = RedisLayout(prefix)
    rings = []
    for timeline in traffic:
        ring = np.zeros(WINDOW_STEPS, row_dtype(NUM_FEATURES))
        minutes = START + np.arange(WINDOW_STEPS)
        ring["minute"][minutes % WINDOW_STEPS] = minutes
        ring["values"][minutes % WINDOW_STEPS] = timeline[:WINDOW_STEPS]
        rings.append(ring.tobytes())
    for start in range(0, nodes, 1000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 1000, nodes)):
                pipe.set(layout.node_window(NETWORK, f"pcscf-{i:06d}"), rings[i % len(rings)])
            pipe.execute()


def redis_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def scale(args: argparse.Namespace) -> dict[str, object]:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
    traffic = node_traffic(16, WINDOW_STEPS + args.ticks, seed=4)
    env = {**os.environ, "REDIS_URL": redis_url, "FAULTPRINT_REDIS_PREFIX": prefix}
    r = redis.Redis.from_url(redis_url)
    built = time.perf_counter()
    ticks = [requests(args.nodes, traffic, range(WINDOW_STEPS + t, WINDOW_STEPS + t + 1), 1000)
             for t in range(args.ticks)]  # fmt: skip
    build_s = time.perf_counter() - built
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        artifact = small_artifact(Path(tmp))
        flags = {"model-source": artifact, "xla": "off", "max-batch-size": args.server_batch,
                 "log-level": "WARNING"}  # fmt: skip
        try:
            with ServerProcess(flags, env) as server:
                assert server.process is not None
                asyncio.run(enrol(server.target, traffic))
                rss0, redis0 = server.rss_bytes(), redis_memory(r)
                filled = time.perf_counter()
                backfill(r, prefix, args.nodes, traffic)
                backfill_s = time.perf_counter() - filled
                # The nodes come back into the replica's memory on first sight: resend the last
                # backfilled minute (a duplicate everywhere) before the clock starts.
                restored = time.perf_counter()
                resend = requests(args.nodes, traffic, range(WINDOW_STEPS - 1, WINDOW_STEPS), 1000)
                asyncio.run(stream(server.target, resend, args.in_flight))
                restore_s = time.perf_counter() - restored
                redis_per_node = (redis_memory(r) - redis0) / args.nodes
                for tick, payloads in enumerate(ticks):
                    due = time.perf_counter() + 60.0
                    cpu0, began = cpu_s(server.process.pid), time.perf_counter()
                    totals = asyncio.run(stream(server.target, payloads, args.in_flight))
                    took = time.perf_counter() - began
                    rows.append({"tick": tick, "all_acknowledged_s": took, **totals,
                                 "server_cpu_s": cpu_s(server.process.pid) - cpu0,
                                 "server_rss_bytes": server.rss_bytes()})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
                    if tick + 1 < len(ticks):
                        time.sleep(max(0.0, due - time.perf_counter()))
                rss = server.rss_bytes()
                redis_after = redis_memory(r)
        finally:
            delete_deployment(r, RedisLayout(prefix))
    steady = rows[1:] or rows
    return {
        "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "nodes": args.nodes,
        "ticks": rows, "request_build_s": build_s, "backfill_s": backfill_s, "restore_s": restore_s,
        "every_minute_within_60_s": all(x["all_acknowledged_s"] <= 60 for x in rows),
        "all_diagnosed": all(x["diagnosed"] == args.nodes for x in rows),
        "steady_tick_s_max": max(x["all_acknowledged_s"] for x in steady),
        "first_tick_s": rows[0]["all_acknowledged_s"],
        "server_rss_per_node_bytes": (rss - rss0) / args.nodes,
        "redis_bytes_per_node_after_backfill": redis_per_node,
        "redis_bytes_per_node_at_end": (redis_after - redis0) / args.nodes,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("cost", help="server CPU and wire bytes per diagnosed node-minute")
    c.add_argument("--nodes", type=int, default=1000)
    c.add_argument("--minutes", type=int, default=20, help="measured minutes per node (each diagnosed)")
    c.add_argument("--batch", type=int, default=500, help="node-minutes per request")
    c.add_argument("--in-flight", type=int, default=8, help="requests unacknowledged per stream")
    c.add_argument("--server-batch", type=int, default=64, help="the server's max batch size")
    c.add_argument("--rounds", type=int, default=3, help="measured rounds, each to both servers in turn")
    c.add_argument("--profile", default="", help="write py-spy's collapsed stacks of the server here")
    s = commands.add_parser("scale", help="many nodes on one replica, one minute each per minute")
    s.add_argument("--nodes", type=int, default=100_000)
    s.add_argument("--ticks", type=int, default=10, help="minutes of wall-clock time")
    s.add_argument("--in-flight", type=int, default=16, help="requests unacknowledged per stream")
    s.add_argument("--server-batch", type=int, default=256, help="the server's max batch size")
    args = parser.parse_args()
    result = cost(args) if args.command == "cost" else scale(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"minute-{args.command}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
