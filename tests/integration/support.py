"""Helpers for integration tests: waiting for a condition, and a private Redis a test may kill and
restart, or start with ACL users or TLS."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import grpc
import pytest
import redis

from benchmarks.launcher import free_port

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server to run a Redis it can stop"
)


async def eventually(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Waits until check() (or the coroutine it returns) is truthy; errors count as not yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
        except (grpc.aio.AioRpcError, redis.exceptions.ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class RedisTls:
    """The files of a Redis that speaks only TLS: the CA that signed both sides, the server's
    certificate and key, and the client certificate and key every client presents."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    def server_options(self) -> list[str]:
        return ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca)]  # fmt: skip

    def query(self) -> str:
        """The URL query that gives redis-py the CA and the client certificate."""
        files = {"ssl_ca_certs": self.ca, "ssl_certfile": self.client_cert, "ssl_keyfile": self.client_key}
        return urlencode({name: str(path) for name, path in files.items()})


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, in a directory of its own,
    with AOF persistence (fsync every second) or none; it can be killed and restarted.

    options are more redis-server flags (an --aclfile, say); with tls it listens for TLS only,
    and url speaks it. login is the user and password of url, when the default user is off."""

    def __init__(self, directory: Path, aof: bool, options: Sequence[str] = (), tls: RedisTls | None = None,
                 login: tuple[str, str] | None = None) -> None:  # fmt: skip
        self.port = free_port()
        self._tls = tls
        self.url = self.url_for(*(login or ("", "")))
        listen = ["--port", str(self.port)]
        if tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), *tls.server_options()]
        self._cmd = ["redis-server", *listen, "--bind", "127.0.0.1", "--save", "",
                     "--dir", str(directory), "--appendonly", "yes" if aof else "no",
                     "--appendfsync", "everysec", *options]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def url_for(self, user: str = "", password: str = "") -> str:
        """The URL of this Redis for user (none: the default user), over TLS if it speaks TLS."""
        login = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
        if self._tls is None:
            return f"redis://{login}127.0.0.1:{self.port}/0"
        return f"rediss://{login}127.0.0.1:{self.port}/0?{self._tls.query()}"

    async def start(self) -> None:
        self._process = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL)
        await eventually(lambda: redis.Redis.from_url(self.url).ping())

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no chance to write anything more."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None


class LoopbackCluster:
    """A Redis Cluster of three masters (no replicas) on free loopback ports, each redis-server in
    a directory of its own; slots are split evenly and the nodes meet with CLUSTER commands
    (no redis-cli needed). url names the first node; a cluster client finds the others."""

    MASTERS = 3

    def __init__(self, directory: Path) -> None:
        self.ports = _cluster_ports(self.MASTERS)
        self._directory = directory
        self._processes: list[subprocess.Popen[bytes]] = []
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        for port in self.ports:
            node_dir = self._directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self._processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL,
            ))  # fmt: skip
        nodes = [self._wait_for(port, timeout_s) for port in self.ports]
        share = 16384 // self.MASTERS
        for i, node in enumerate(nodes):
            last = 16383 if i == self.MASTERS - 1 else (i + 1) * share - 1
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for node in nodes[1:]:
            node.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
        deadline = time.monotonic() + timeout_s
        while not all(_cluster_ok(node) for node in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the loopback Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        for node in nodes:
            node.close()

    @staticmethod
    def _wait_for(port: int, timeout_s: float) -> redis.Redis:
        node = redis.Redis(port=port, host="127.0.0.1", socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                node.ping()
                return node
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.wait(10)
        self._processes.clear()


def _cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus ports (each plus 10000) are free too, so below 55536."""
    ports: list[int] = []
    candidates = random.Random().sample(range(20_000, 45_000), 200)
    for port in candidates:
        if len(ports) == count:
            break
        if all(_free(p) for p in (port, port + 10_000)):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ok(node: redis.Redis) -> bool:
    info = node.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text and "cluster_known_nodes:3" in text
