"""The probe data contract: one declaration per catalogue column, the checks on rows and windows, and its docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faultprint.traffic.catalogue import FAMILIES, FEATURE_INDEX, FEATURE_NAMES, NUM_FEATURES
from faultprint.traffic.contract import (
    LOWER,
    STATISTICS,
    UPPER,
    Kind,
    WindowRule,
    count_out_of_contract,
    describe_counts,
    out_of_contract,
    with_contract_table,
)

ROOT = Path(__file__).resolve().parents[3]


def column(name: str) -> int:
    return FEATURE_INDEX[name]


def test_every_catalogue_column_is_declared_once_in_order_with_a_unit_a_range_and_a_meaning() -> None:
    assert [s.name for s in STATISTICS] == list(FEATURE_NAMES)
    assert all(s.unit and s.meaning and s.minimum < s.maximum for s in STATISTICS)
    assert len({s.meaning for s in STATISTICS}) == NUM_FEATURES  # no two columns described alike
    assert LOWER.shape == UPPER.shape == (NUM_FEATURES,)


def test_the_family_gives_the_kind_and_the_exceptions_are_the_stated_ones() -> None:
    kinds = {s.name: s.kind for s in STATISTICS}
    by_family = {family: {kinds[n] for n in names} for family, names in FAMILIES.items()}
    assert by_family["requests"] == by_family["responses"] == by_family["codes"] == {Kind.COUNT}
    assert by_family["reliability"] == by_family["traffic"] == {Kind.COUNT}
    assert by_family["latencies"] == {Kind.LATENCY} and by_family["gauges"] == {Kind.GAUGE}
    assert [n for n in FAMILIES["rx"] if kinds[n] is Kind.LATENCY] == [
        "rx_aar_latency_mean_ms", "rx_aar_latency_std_ms", "rx_aar_latency_p95_ms",
    ]  # fmt: skip
    assert [n for n in FAMILIES["kpis"] if kinds[n] is not Kind.RATIO] == ["kpi_mean_call_duration_s"]
    assert kinds["kpi_mean_call_duration_s"] is Kind.SECONDS
    assert kinds["kpi_calls_torn_down_within_2s"] is Kind.RATIO
    ratio = STATISTICS[column("kpi_registration_success_rate")]
    assert (ratio.minimum, ratio.maximum, ratio.range_text()) == (0.0, 1.0, "[0, 1] (ratio)")
    assert all(s.unit == "ms" for s in STATISTICS if s.kind is Kind.LATENCY)
    assert STATISTICS[column("lat_bye_to_200_p95_ms")].range_text() == "[0, 600 000] ms (latency)"
    assert STATISTICS[column("sip_kbytes_in")].unit == "kB/min"


def test_rows_treat_nan_as_missing_and_negative_counts_as_resets_windows_do_not() -> None:
    row = np.zeros((3, NUM_FEATURES))
    row[0, column("req_bye")] = -5000.0  # a probe restart: the delta across it is negative
    row[1, column("lat_bye_to_200_mean_ms")] = np.nan  # lost in export
    row[2, column("gauge_active_dialogs")] = -1.0  # a gauge is never negative
    rows, windows = out_of_contract(row, "rows"), out_of_contract(row, "windows")
    assert [tuple(map(int, at)) for at in np.argwhere(rows)] == [(2, column("gauge_active_dialogs"))]
    assert int(windows.sum()) == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kpi_registration_success_rate", 99.5),  # a ratio in percent
        ("kpi_calls_torn_down_within_2s", 12.0),  # a count where a share belongs
        ("kpi_answer_seizure_ratio", -0.1),
        ("lat_invite_to_200_mean_ms", 9_000_000.0),  # microseconds, not ms
        ("kpi_mean_call_duration_s", 100_000.0),  # ms, not s
        ("req_register_reregister", 2e9),  # a cumulative total, not a per-minute delta
        ("gauge_registered_contacts", np.inf),
    ],
)
def test_values_a_differently_filled_column_gives_are_out_of_contract(name: str, value: float) -> None:
    values = np.zeros((2, 60, NUM_FEATURES), np.float32)
    values[1, 7, column(name)] = value
    for stage in ("rows", "windows"):
        counts = count_out_of_contract(values, stage)  # type: ignore[arg-type]
        assert counts.shape == (NUM_FEATURES,) and counts.sum() == counts[column(name)] == 1


def test_the_bounds_are_inclusive() -> None:
    values = np.zeros((2, NUM_FEATURES))
    values[0], values[1] = LOWER, UPPER
    assert not out_of_contract(values, "windows").any()


def test_a_window_is_unusable_when_a_column_or_a_share_of_its_values_is_out_of_contract() -> None:
    rule = WindowRule(max_minutes_per_column=5, max_share=0.01)
    counts = np.zeros((4, NUM_FEATURES), np.int64)
    counts[1, 3] = 5  # a glitch of 5 minutes: repairable
    counts[2, 3] = 6  # a column out of range in 6 minutes: filled differently
    counts[3, :26] = 3  # 78 values, over 1 % of 60 x 129, in no column more than 3 times
    assert rule.unusable(counts, 60).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="share in"):
        WindowRule(max_share=2.0)


def test_counts_are_described_worst_column_first() -> None:
    counts = np.zeros(NUM_FEATURES, np.int64)
    assert describe_counts(counts) == "no value out of contract"
    counts[column("kpi_answer_seizure_ratio")], counts[column("req_bye")] = 2, 60
    assert describe_counts(counts) == (
        "62 values out of contract in 2 columns (worst: req_bye 60, kpi_answer_seizure_ratio 2)"
    )


def test_the_columns_must_be_the_catalogue() -> None:
    with pytest.raises(ValueError, match="128 columns, the contract has 129"):
        out_of_contract(np.zeros((60, 128)), "windows")


def test_the_docs_table_is_generated_from_the_contract_and_current() -> None:
    """docs/data-contract.md shows the table generated from STATISTICS (`make docs` regenerates it)."""
    doc = (ROOT / "docs" / "data-contract.md").read_text()
    assert with_contract_table(doc) == doc, "docs/data-contract.md is stale: run `make docs`"
    assert "| 127 | `kpi_mean_call_duration_s` | kpis | seconds | s | 0 to 86 400 |" in doc
    with pytest.raises(ValueError, match="contract:begin"):
        with_contract_table("# no markers")
