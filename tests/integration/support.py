"""Helpers for integration tests: waiting for a condition, and a private Redis a test may kill and restart."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

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


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, in a directory of its own,
    with AOF persistence (fsync every second) or none; it can be killed and restarted."""

    def __init__(self, directory: Path, aof: bool) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--dir", str(directory), "--appendonly", "yes" if aof else "no",
                     "--appendfsync", "everysec"]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._process = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL)
        await eventually(lambda: redis.Redis.from_url(self.url).ping())

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no chance to write anything more."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
