"""Starts a server replica as a child process and waits until it serves.

For the demo, the benchmark suite and anyone scripting a local deployment: the
child is a plain ``python -m faultprint.server`` with flags, so what runs is what an SRE runs.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faultprint.registry.layout import RedisLayout

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports_in_a_row(count: int) -> list[int]:
    """count consecutive free loopback ports (a server's workers take metrics port + index)."""
    while True:
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return list(range(first, first + count))


_POLL_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


def wait_serving(target: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Returns once health says SERVING; raises if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    # A channel refused while the model loads backs off exponentially (to 120 s by default)
    # and would notice the server up to tens of seconds late: retry at most every 0.5 s.
    with grpc.insecure_channel(target, options=_POLL_RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with code {server.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise RuntimeError(f"server at {target} did not become SERVING within {timeout_s:.0f} s")


class ServerProcess:
    """``with ServerProcess(flags, env, log) as server:`` runs a replica on a free loopback port."""

    def __init__(self, flags: dict[str, object], env: dict[str, str], log: IO[str] | None = None) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        # Stopped by SIGTERM: no drain period unless the flags ask for one.
        self.flags = {"listen-address": self.target, "shutdown-drain-s": 0, **flags}
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        args = [sys.executable, "-m", "faultprint.server"]
        for name, value in self.flags.items():
            args += [f"--{name}", str(value)]
        self.process = subprocess.Popen(
            args, env=self.env, cwd=ROOT, stdout=self.log or subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            wait_serving(self.target, self.process)
            workers = int(str(self.flags.get("workers", 1)))
            if workers > 1:
                self._wait_workers(workers)
        except BaseException:
            self.stop()
            raise
        return self

    def worker_pids(self) -> list[int]:
        """The worker processes a server started with --workers supervises (none otherwise)."""
        assert self.process is not None
        pid = self.process.pid
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def _wait_workers(self, workers: int, timeout_s: float = 120) -> None:
        """Health answers once one worker serves; a benchmark wants them all: waits until each
        of this supervisor's workers has registered as a replica in Redis."""
        from faultprint.registry.connection import connect

        prefix = str(self.flags.get("redis-prefix") or self.env.get("FAULTPRINT_REDIS_PREFIX", "faultprint"))
        url = str(self.flags.get("redis-url") or self.env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        deadline = time.monotonic() + timeout_s
        with connect(url) as client:
            while time.monotonic() < deadline:
                registered = set().union(*registered_workers(client, prefix).values())
                if len(registered & set(self.worker_pids())) >= workers:
                    return
                time.sleep(0.3)
        raise RuntimeError(f"not all {workers} workers at {self.target} registered within {timeout_s:.0f} s")

    def rss_bytes(self) -> int:
        """Resident memory of the server process and, if it supervises workers, of theirs."""
        assert self.process is not None
        pid = self.process.pid
        return sum(_rss_bytes(p) for p in [pid, *self.worker_pids()])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # exited since it was listed
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def registered_workers(client: Any, prefix: str) -> dict[int, set[int]]:
    """Worker index -> pids of the worker processes registered as replicas under prefix
    (client: a redis.Redis); replicas that are not workers are left out."""
    found: dict[int, set[int]] = {}
    for raw in client.hvals(RedisLayout(prefix).replicas):
        report = json.loads(raw)
        if report.get("worker") is not None:
            found.setdefault(report["worker"], set()).add(report["pid"])
    return found
