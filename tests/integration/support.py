"""Helpers for integration tests: waiting for a condition, and a private Redis a test may kill and
restart, or start with ACL users or TLS."""

from __future__ import annotations

import asyncio
import shutil
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
