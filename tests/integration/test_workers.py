"""Several workers on one port, as an SRE runs them: `python -m faultprint.server --workers N`.

Each worker is a real server process; the probes are real clients, each on its own
connection. A killed worker is replaced while the others keep serving, SIGTERM stops
them all cleanly, and a worker that cannot start stops the whole replica.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from benchmarks.launcher import ROOT, ServerProcess, registered_workers
from faultprint.client import FaultprintClient
from faultprint.registry.connection import connect

pytestmark = pytest.mark.integration

# Few batch sizes to warm, so each worker starts quickly.
_FAST_START = {"cpu-devices": 1, "max-batch-size": 4, "allowed-batch-sizes": "1,4", "xla": "off",
               "shutdown-grace-s": 1}  # fmt: skip


def _environment(redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "FAULTPRINT_REDIS_PREFIX": redis_prefix}


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.3)


def _classify_over_own_connections(target: str, window: np.ndarray, probes: int) -> list[str]:
    labels = []
    for probe in range(probes):
        with FaultprintClient(target, timeout_s=30, own_connection=True) as client:
            labels.append(client.classify("net-a", f"node-{probe}", window).label)
    return labels


def test_workers_share_one_port_and_a_killed_worker_is_replaced(
    artifact: Path, redis_url: str, redis_prefix: str, windows: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    store = connect(redis_url)
    flags = {"model-source": artifact, "workers": 2, **_FAST_START}
    with (
        (tmp_path / "server.log").open("w") as log,
        ServerProcess(flags, _environment(redis_url, redis_prefix), log) as server,
    ):
        assert set(registered_workers(store, redis_prefix)) == {0, 1}  # the launcher waits for every worker
        with FaultprintClient(server.target) as client:
            client.create_reference_case("net-a", "normal", [windows("normal", 1, seed=1)[0]])
        # Each worker learns the case from Redis; every connection, wherever it lands, is answered.
        window = windows("normal", 1, seed=2)[0]
        _until(lambda: _answers_all(server.target, window), 60, "every worker to know the case")

        killed = min(registered_workers(store, redis_prefix)[0])
        os.kill(killed, signal.SIGKILL)
        # Connections the kernel queued on the dying worker are reset, as with any crash;
        # once it is gone (the supervisor reaps it), every new connection reaches the other.
        _until(lambda: not Path(f"/proc/{killed}").exists(), 10, "the killed worker to be reaped")
        assert _classify_over_own_connections(server.target, window, probes=8) == ["normal"] * 8
        _until(
            lambda: len(registered_workers(store, redis_prefix)[0] - {killed}) == 1,
            120,
            "worker 0 to be restarted",
        )
        assert _classify_over_own_connections(server.target, window, probes=8) == ["normal"] * 8

        pids = {pid for found in registered_workers(store, redis_prefix).values() for pid in found} - {killed}
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "a worker outlived its supervisor"
    # Each stopped worker removed its own replica record; only the killed one's is left.
    assert registered_workers(store, redis_prefix) == {0: {killed}}
    store.close()


def _answers_all(target: str, window: np.ndarray) -> bool:
    try:
        return _classify_over_own_connections(target, window, probes=8) == ["normal"] * 8
    except Exception:  # a worker that has not synced yet answers NOT_FOUND
        return False


def test_a_worker_that_cannot_start_stops_every_worker(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt-model"
    corrupt.mkdir()
    (corrupt / "metadata.json").write_text("{not json")
    args = [sys.executable, "-m", "faultprint.server", "--workers", "2", "--model-source", str(corrupt),
            "--listen-address", "127.0.0.1:0"]  # fmt: skip
    done = subprocess.run(
        args, env=_environment(redis_url, redis_prefix), cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "before it served; stopping all workers" in done.stderr
