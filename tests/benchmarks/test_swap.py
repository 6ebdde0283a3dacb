"""The hot-swap benchmark's summary of recorded calls, and how it ends its load (no server)."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import time

from benchmarks.load_generator import Tally, until_done_or_told
from benchmarks.suite import PLANS
from benchmarks.swap import markdown, summarise

HOST = {"platform": "test", "cpus": 2, "gpus": [], "date": "2026-11-22 00:00 UTC"}


def calls(until_s: float, v2_from_s: float | None, latency_ms: float = 10.0) -> list[list[object]]:
    """One OK call every 0.1 s from t = 100 s; answered by v2 from v2_from_s on (None: never)."""
    rows: list[list[object]] = []
    t = 100.0
    while t < until_s:
        version = "v2" if v2_from_s is not None and t >= v2_from_s else "v1"
        rows.append([t, latency_ms, "OK", version])
        t += 0.1
    return rows


def test_a_finished_swap_is_timed_and_judged_by_its_p99() -> None:
    result = summarise(PLANS["small"], calls(160.0, 130.0), 125.0, "v1", "v2", 16, "stream")
    assert result["swap_finished"] and result["passes"]
    assert math.isclose(result["swap_s"], 5.0, abs_tol=0.11)
    assert result["swap"]["calls"] > 0 and result["p99_ratio"] == 1.0


def test_a_swap_that_never_finished_fails_instead_of_breaking_the_report() -> None:
    result = summarise(PLANS["original"], calls(150.0, None), 125.0, "v1", "v2", 16, "stream")
    assert not result["swap_finished"] and not result["passes"]
    assert result["swap"]["calls"] == 0 and math.isnan(result["swap"]["p99_ms"])
    row = markdown([result], HOST).splitlines()[-1]
    assert "not within 180 s" in row and row.endswith("FAIL |")


async def test_the_load_generator_ends_its_run_when_told() -> None:
    """swap.py ends the load once the swap is over: SIGTERM ends the run and its measurement window."""
    _, tally = Tally.starting_now(argparse.Namespace(warmup_s=0.0, duration_s=60.0))
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    started = time.perf_counter()
    await until_done_or_told(60.0, tally)
    assert time.perf_counter() - started < 5
    assert tally.measure_to - tally.measure_from < 5
    # Told nothing, it waits the run out.
    _, tally = Tally.starting_now(argparse.Namespace(warmup_s=0.0, duration_s=0.3))
    await until_done_or_told(0.3, tally)
    assert abs(tally.measure_to - tally.measure_from - 0.3) < 1e-9
