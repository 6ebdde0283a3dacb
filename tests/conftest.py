"""Shared fixtures: an isolated Redis prefix per test, small model artifacts, and real servers on loopback."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import redis

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS
from faultprint.traffic.simulator import PROFILES, simulate_windows

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Splits the CPU into two logical devices before TensorFlow starts, so servers can use both."""
    from faultprint.server.model.devices import resolve_devices

    resolve_devices("cpu", cpu_devices=2)


# The Redis kinds every Redis test runs against: a single server (REDIS_URL) and a Redis
# Cluster of three masters started on loopback; FAULTPRINT_TEST_REDIS=single runs one.
REDIS_KINDS = os.environ.get("FAULTPRINT_TEST_REDIS", "single,cluster").split(",")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a three-master Redis Cluster on loopback ports, for the whole session."""
    if shutil.which("redis-server") is None:
        pytest.fail("the Redis Cluster tests need redis-server (run them with `make test`)")
    from tests.integration.support import LoopbackCluster

    cluster = LoopbackCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session", params=REDIS_KINDS)
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "cluster":
        return cast(str, request.getfixturevalue("redis_cluster_url"))
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(
            f"integration tests need Redis at REDIS_URL={REDIS_URL} (run them with `make test`): {exc}"
        )
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is removed afterwards."""
    from faultprint.registry.connection import connect, delete_deployment
    from faultprint.registry.layout import RedisLayout

    prefix = f"fptest-{uuid.uuid4().hex[:10]}"
    yield prefix
    with connect(redis_url) as client:
        delete_deployment(client, RedisLayout(prefix))


def make_artifact(
    out: Path, seed: int, threshold: float = 1.0, features: int = NUM_FEATURES, lstm_units: int = 8,
    network_baseline: bool = False,
) -> Path:  # fmt: skip
    """An untrained encoder (tiny unless lstm_units says otherwise) with a fitted scaler.

    Enough to test serving plumbing, and fast to build; a larger lstm_units gives a
    batch time long enough for deadline tests to be deterministic. network_baseline: a
    tower that reads windows against their network's baseline, with a summary branch.
    """
    from faultprint.encoder.tower import TowerConfig
    from faultprint.trainer.export import export_untrained

    config = TowerConfig(WINDOW_STEPS, features, (lstm_units, lstm_units), 16, 4,
                         summary_units=8 if network_baseline else 0, network_baseline=network_baseline)  # fmt: skip
    version = f"test-{seed}-{uuid.uuid4().hex[:6]}"
    return export_untrained(config, out, seed, distance_threshold=threshold, version=version)


@pytest.fixture(scope="session")
def artifact_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("artifacts")
    return lambda seed=0, **kw: make_artifact(root, seed, **kw)


@pytest.fixture(scope="session")
def artifact(artifact_factory: Callable[..., Path]) -> Path:
    return artifact_factory(seed=1)


@pytest.fixture
def windows() -> Callable[[str, int, int], np.ndarray]:
    """windows(condition, count, seed) simulated on the metro-eu profile."""

    def make(condition: str, count: int = 1, seed: int = 0) -> np.ndarray:
        return simulate_windows(PROFILES["metro-eu"], [condition], count, seed)[0]

    return make


@pytest.fixture
async def start_server(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """start_server(**settings) starts a real replica on an ephemeral loopback port; returns (server, target)."""
    from faultprint.server.app import create_server
    from faultprint.server.settings import ServerSettings

    started = []

    async def start(**overrides: Any) -> tuple[Any, str]:
        settings = ServerSettings.of(
            **{
                "listen_address": "127.0.0.1:0",
                "redis_url": redis_url,
                "redis_prefix": redis_prefix,
                "model_cache_dir": str(tmp_path / f"models-{len(started)}"),
                "shutdown_grace_s": 1.0,
                # Many servers and event loops share this process; freezing is process-wide.
                "freeze_gc": False,
                # XLA compiles each batch size at warm-up (about half a second each), which
                # tests of the serving plumbing do not need; the end-to-end test and the
                # XLA tests run the default.
                "xla": "off",
                **overrides,
            }
        )
        server, port = await create_server(settings)
        started.append(server)
        await server.wait_ready()
        return server, f"127.0.0.1:{port}"

    yield start
    for server in started:
        await _stop_or_explain(server)


async def _stop_or_explain(server: Any, timeout_s: float = 60.0) -> None:
    """Stops a server; if the stop hangs, fails with the stack of every task still pending.

    A part that does not stop in time is logged by the server and left behind (see
    FaultprintServer.stop); that log line is shown with the test's output.
    """
    import asyncio
    import io

    try:
        await asyncio.wait_for(server.stop(), timeout_s)
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        pytest.fail(f"server.stop() did not finish in {timeout_s:.0f} s; pending tasks:\n{stacks.getvalue()}")
