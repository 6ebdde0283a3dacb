"""The ceiling's layouts: one encoder call at a time against several at once, the best counting."""

from __future__ import annotations

import pytest

from benchmarks.ceiling import measure
from benchmarks.suite import PLANS, with_flags

# tests/conftest.py splits the CPU into two logical devices before TensorFlow starts.
DEVICES = ["/device:CPU:0", "/device:CPU:1"]


def test_each_size_counts_its_best_layout_and_keeps_the_latency_of_one_call_alone() -> None:
    rows = measure("small", [1, 4], 0.05, (False,), DEVICES, [1, 2])

    assert [r["batch_size"] for r in rows] == [1, 4]
    for row in rows:
        by = row["windows_per_s_by_instances"]
        assert set(by) == {"1", "2"}
        assert row["windows_per_s"] == max(by.values())
        assert by[str(row["instances"])] == row["windows_per_s"]
        assert row["ms_per_batch"] > 0 and row["p99_ms_per_batch"] > 0


def test_the_ceiling_is_timed_alone_per_core_and_in_the_plans_own_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert with_flags(PLANS["small"], ["cpu-devices=1"]).ceiling_layouts == "1,4"
    assert with_flags(PLANS["small"], ["cpu-devices=3"]).ceiling_layouts == "1,3,4"
