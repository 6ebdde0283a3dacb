"""The hot-swap benchmark's summary of recorded calls (no server)."""

from __future__ import annotations

import math

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
    assert "not within 40 s" in row and row.endswith("FAIL |")
