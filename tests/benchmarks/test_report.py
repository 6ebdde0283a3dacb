"""The benchmark report's bar checks, on hand-made results (no server, no encoder)."""

from __future__ import annotations

from typing import Any

from benchmarks.report import check_bars, load_generators


def _point(mode: str, concurrency: int, windows_per_s: float, **extra: float) -> dict[str, Any]:
    return {"mode": mode, "concurrency": concurrency, "windows_per_s": windows_per_s, "p99_ms": 1.0,
            "mean_compute_ms": 1.0, "outcomes": {"OK": 1}, **extra}  # fmt: skip


def _small(stream_point: dict[str, Any]) -> dict[str, Any]:
    ceiling = [{"batch_size": 1, "windows_per_s": 1000.0, "ms_per_batch": 1.0},
               {"batch_size": 64, "windows_per_s": 6000.0, "ms_per_batch": 10.0}]  # fmt: skip
    points = [_point("unary", 1, 300.0), _point("stream", 1, 300.0), stream_point]
    return {"models": {"small": {"ceiling": ceiling, "max_batch_size": 64,
                                 "batching": {"points": points}, "naive": {"points": []}}}}  # fmt: skip


def _stream_bar(report: dict[str, Any]) -> dict[str, Any]:
    return next(b for b in check_bars(report) if b["bar"].startswith("small C=64 stream"))


def test_a_throughput_bar_divides_by_the_ceiling_timed_beside_its_point() -> None:
    bar = _stream_bar(
        _small(
            _point(
                "stream",
                64,
                2200.0,
                ceiling_before_windows_per_s=4000.0,
                ceiling_after_windows_per_s=6000.0,
                ceiling_beside_windows_per_s=5000.0,
            )
        )
    )
    assert bar["measured"] == 2200.0 / 5000.0
    assert bar["pass"]


def test_without_a_ceiling_beside_the_point_the_runs_first_ceiling_counts() -> None:
    bar = _stream_bar(_small(_point("stream", 64, 2200.0)))
    assert bar["measured"] == 2200.0 / 6000.0
    assert not bar["pass"]


def test_the_report_names_the_generator_that_sent_the_points() -> None:
    report = _small(_point("stream", 64, 2200.0))
    assert load_generators(report) == ["python"]  # results from before the field
    for p in report["models"]["small"]["batching"]["points"]:
        p["generator"] = "native"
    assert load_generators(report) == ["native"]
