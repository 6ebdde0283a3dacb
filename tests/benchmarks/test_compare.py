"""The settings comparison's variant syntax and its summary of rounds (no server)."""

from __future__ import annotations

import pytest

from benchmarks.compare import Variant, parse_variant, summarise


def test_a_variant_is_a_name_with_optional_server_flags() -> None:
    assert parse_variant("default") == Variant("default")
    assert parse_variant(" b32  max-batch-size=32 allowed-batch-sizes=1,8,32 ") == Variant(
        "b32", ("max-batch-size=32", "allowed-batch-sizes=1,8,32")
    )


@pytest.mark.parametrize("text", ["", "   ", "x=1", "b32 max-batch-size", "b32 =32"])
def test_a_malformed_variant_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_variant(text)


def test_rounds_reduce_to_median_spread_and_errors() -> None:
    rounds = [
        {"windows_per_s": 100.0, "p99_ms": 9.0, "outcomes": {"OK": 500}},
        {"windows_per_s": 300.0, "p99_ms": 3.0, "outcomes": {"OK": 1500, "LATE": 2}},
        {"windows_per_s": 200.0, "p99_ms": 5.0, "outcomes": {"OK": 1000, "UNAVAILABLE": 1, "offered": 1200}},
    ]
    assert summarise(rounds) == {
        "median_windows_per_s": 200.0,
        "min_windows_per_s": 100.0,
        "max_windows_per_s": 300.0,
        "median_p99_ms": 5.0,
        "late": 2,
        "errors": 1,
    }
