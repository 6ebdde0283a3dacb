"""Start-up failures an SRE meets first end in one line that says what to change, not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.launcher import ROOT, free_port

pytestmark = pytest.mark.integration


def _start(*flags: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url}
    return subprocess.run([sys.executable, "-m", "faultprint.server", "--xla", "off", *flags],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_port_in_use_is_one_line(artifact: Path, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = _start("--listen-address", address, "--model-source", str(artifact), redis_url=redis_url)
    assert done.returncode == 2
    assert f"faultprint-server: cannot listen on {address}" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_redis_is_one_line(artifact: Path) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    done = _start("--listen-address", "127.0.0.1:0", "--model-source", str(artifact), redis_url=unreachable)
    assert done.returncode == 2
    assert f"faultprint-server: cannot reach Redis at {unreachable}" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_redis_is_named_without_its_password(artifact: Path) -> None:
    port = free_port()
    unreachable = f"redis://faultprint-server:s3cret@127.0.0.1:{port}/0"
    done = _start("--listen-address", "127.0.0.1:0", "--model-source", str(artifact), redis_url=unreachable)
    assert done.returncode == 2
    assert f"cannot reach Redis at redis://faultprint-server:***@127.0.0.1:{port}/0" in done.stderr
    assert "s3cret" not in done.stderr


def test_a_bad_setting_is_one_line(redis_url: str) -> None:
    done = _start("--max-batch-size", "lots", redis_url=redis_url)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "faultprint-server: bad setting: max_batch_size='lots' is not a valid int: "
        "invalid literal for int() with base 10: 'lots'"
    )


def test_the_client_and_the_trainer_say_in_one_line_what_they_cannot_reach() -> None:
    unreachable = f"127.0.0.1:{free_port()}"
    client = subprocess.run([sys.executable, "-m", "faultprint.client", "--target", unreachable, "info"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert client.returncode == 1
    assert (
        client.stderr.startswith("faultprint-client: UNAVAILABLE: ")
        and "is a server listening" in client.stderr
    )
    assert "Traceback" not in client.stderr
    env = {**os.environ, "REDIS_URL": f"redis://{unreachable}/0"}
    trainer = subprocess.run([sys.executable, "-m", "faultprint.trainer", "status"],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert trainer.returncode == 2
    assert trainer.stderr.strip().splitlines()[-1].startswith("status: cannot reach Redis (")
    assert "Traceback" not in trainer.stderr
