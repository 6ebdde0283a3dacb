"""The native load generator against a real server over loopback: it counts every answer the
server gave, names refusals by their status, and ends early on SIGTERM.

The benchmark suite's closed-loop figures come from it, so its tally is held to the server's
own count of the windows it answered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.load_generator import NATIVE_GENERATOR
from faultprint.client import AsyncFaultprintClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def native_generator_built() -> None:
    if not NATIVE_GENERATOR.exists():
        pytest.fail(f"{NATIVE_GENERATOR} is missing: `make test` builds it (make native-load)")


class AnswerCount:
    """Counts the windows the server diagnosed (each is recorded once as its node's state)."""

    def __init__(self, server: Any) -> None:
        self.count = 0
        record = server.writer.record

        def counted(*args: Any) -> None:
            self.count += 1
            record(*args)

        server.writer.record = counted


async def generate(target: str, *flags: str, stop_after_s: float | None = None) -> dict[str, Any]:
    """One load_generator.py run (native by default) in its own process; its JSON result.
    With stop_after_s, SIGTERM goes to it that long after the native generator started."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "benchmarks" / "load_generator.py"), "--target", target, *flags,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    if stop_after_s is not None:
        await native_child_started(process.pid)
        await asyncio.sleep(stop_after_s)
        process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def native_child_started(pid: int, timeout_s: float = 30.0) -> None:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for _ in range(int(timeout_s / 0.05)):
        if (await asyncio.to_thread(children.read_text)).strip():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"load_generator.py did not start the native generator in {timeout_s:.0f} s")


@pytest.mark.parametrize("mode", ["unary", "stream"])
async def test_every_answer_the_server_gave_is_counted(  # type: ignore[no-untyped-def]
    start_server, artifact, windows, mode
) -> None:
    server, target = await start_server(model_source=str(artifact), max_batch_size=8)
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-load", "normal", [windows("normal", 1)[0]])
    answers = AnswerCount(server)

    result = await generate(target, "--network", "net-load", "--mode", mode, "--concurrency", "6",
                            "--connections", "2", "--warmup-s", "0.3", "--duration-s", "1")  # fmt: skip

    assert result["generator"] == "native"
    assert set(result["outcomes"]) == {"OK"} and result["ok"] > 0
    # Every answer is in the timeline, warm-up and the calls that ended after the measurement
    # included; the measurement itself counts only those inside its second.
    assert sum(result["timeline"]["OK"]) == answers.count
    assert result["ok"] < answers.count
    assert result["windows_per_s"] == pytest.approx(result["ok"] / result["seconds"])
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]


async def test_refusals_are_counted_by_status(start_server, artifact) -> None:  # type: ignore[no-untyped-def]
    _server, target = await start_server(model_source=str(artifact))
    flags = ("--network", "no-such-network", "--concurrency", "2", "--warmup-s", "0", "--duration-s", "0.5")

    unary = await generate(target, *flags, "--mode", "unary")
    stream = await generate(target, *flags, "--mode", "stream")

    assert set(unary["outcomes"]) == {"NOT_FOUND"} and unary["ok"] == 0
    assert set(stream["outcomes"]) == {"STREAM_ERROR_5"} and stream["ok"] == 0  # 5: NOT_FOUND
    assert unary["windows_per_s"] == 0


async def test_sigterm_ends_the_run_and_its_measurement_early(  # type: ignore[no-untyped-def]
    start_server, artifact, windows: Callable[..., Any]
) -> None:
    _server, target = await start_server(model_source=str(artifact))
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case("net-term", "normal", [windows("normal", 1)[0]])

    result = await generate(target, "--network", "net-term", "--mode", "stream", "--concurrency", "2",
                            "--warmup-s", "0", "--duration-s", "120", stop_after_s=1.0)  # fmt: skip

    assert result["ok"] > 0
    assert result["seconds"] < 10
