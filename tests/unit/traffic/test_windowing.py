"""Rows to windows: the on-disk format round-trips, and damaged rows are repaired or dropped, with a report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faultprint.traffic.catalogue import FEATURE_INDEX, NUM_FEATURES
from faultprint.traffic.contract import STATISTICS, Kind
from faultprint.traffic.rows import Rows, read_rows, write_rows
from faultprint.traffic.simulator import PROFILES, simulate_node_rows
from faultprint.traffic.windowing import WindowingOptions, make_windows

START = 29_000_000
RATIOS = [s.kind is Kind.RATIO for s in STATISTICS]


def clean_rows(minutes: int = 180, label: str = "normal") -> Rows:
    """Every column counts the minutes from 1 (ratios in thousandths, to stay within the data contract)."""
    values = np.tile(np.arange(minutes, dtype=np.float64)[:, None], (1, NUM_FEATURES)) + 1
    values[:, RATIOS] /= 1000
    return Rows(
        node=np.full(minutes, "pcscf-1"), network=np.full(minutes, "net"),
        minute=START + np.arange(minutes), values=values, label=np.full(minutes, label, dtype=object),
    )  # fmt: skip


def test_clean_rows_give_strided_windows_of_60_minutes() -> None:
    windows, labels, report = make_windows(clean_rows(), WindowingOptions(stride_minutes=30))
    assert windows.shape == (5, 60, NUM_FEATURES) and list(labels) == ["normal"] * 5
    assert windows[1, 0, 0] == 31 and report.windows == 5 and report.missing_minutes == 0


def _without(rows: Rows, *spans: tuple[int, int]) -> Rows:
    keep = np.ones(len(rows), dtype=bool)
    for start, stop in spans:
        keep[start:stop] = False
    return Rows(rows.node[keep], rows.network[keep], rows.minute[keep], rows.values[keep], rows.label[keep])  # type: ignore[index]


def test_short_gaps_are_interpolated_and_outages_bridged_unless_they_end_a_window() -> None:
    # 3 missing minutes, then a 20-minute outage: both repaired by the straight line through them.
    rows = _without(clean_rows(), (10, 13), (100, 120))
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=1))
    starts = list(range(0, 121))  # windows ending at minutes 59..179
    ends_in_outage = [s for s in starts if 105 <= s + 59 < 120]  # its newest 6 or more minutes missing
    assert report.missing_minutes == 23 and report.dropped_gap == len(ends_in_outage) == 15
    assert len(windows) == len(starts) - 15 and np.isfinite(windows).all()
    assert windows[0, 10:13, 5].tolist() == [11.0, 12.0, 13.0]
    assert windows[61 - 15, 39:59, 5].tolist() == list(np.arange(101.0, 121.0))  # the window from minute 61


def test_an_outage_longer_than_max_outage_minutes_drops_the_windows_that_hold_it() -> None:
    rows = _without(clean_rows(), (60, 91))  # 31 minutes
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert len(windows) == 2 and report.dropped_gap == 1  # the window of minutes 60..119
    rows = _without(clean_rows(), (60, 90))  # 30 minutes: bridged
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert len(windows) == 3 and report.dropped_gap == 0
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60, max_outage_minutes=5))
    assert len(windows) == 2 and report.dropped_gap == 1


def test_two_outages_in_one_window_count_together() -> None:
    rows = _without(clean_rows(), (62, 82), (95, 112))  # 20 + 17 minutes in the window of minutes 60..119
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert len(windows) == 2 and report.dropped_gap == 1


def test_windowing_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_outage_minutes"):
        WindowingOptions(max_gap_minutes=10, max_outage_minutes=5)
    with pytest.raises(ValueError, match="steps"):
        WindowingOptions(max_outage_minutes=60)
    short = WindowingOptions.for_steps(8)  # a short window bridges at most half of itself
    assert (short.steps, short.max_outage_minutes, short.max_gap_minutes) == (8, 4, 4)
    assert WindowingOptions.for_steps(60) == WindowingOptions()


def test_counter_resets_and_lost_values_are_repaired_and_counted() -> None:
    rows = clean_rows()
    rows.values[50, FEATURE_INDEX["req_register_initial"]] = -5000.0  # a probe restart
    rows.values[70, 3] = np.nan
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert report.counter_resets == 1 and report.missing_values == 1 and report.values_interpolated == 2
    assert windows[0, 50, FEATURE_INDEX["req_register_initial"]] == 51.0
    assert windows[1, 10, 3] == 71.0


def test_values_lost_at_a_nodes_first_and_last_minutes_hold_the_nearest_value() -> None:
    rows = clean_rows()
    rows.values[0, 3] = np.nan
    rows.values[-2:, 4] = np.nan
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert len(windows) == 3 and report.dropped_gap == 0 and report.values_interpolated == 3
    assert windows[0, 0, 3] == windows[0, 1, 3] and windows[-1, -1, 4] == windows[-1, -3, 4]


def test_values_lost_in_a_nodes_first_minutes_hold_up_to_max_outage_minutes() -> None:
    rows = clean_rows()
    rows.values[:30, 3] = np.nan
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert len(windows) == 3 and report.dropped_gap == 0 and (windows[0, :31, 3] == 31).all()
    rows.values[30, 3] = np.nan
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert len(windows) == 2 and report.dropped_gap == 1


def test_values_lost_for_more_than_five_last_minutes_drop_the_last_window() -> None:
    rows = clean_rows()
    rows.values[-6:, 3] = np.nan
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert len(windows) == 2 and report.dropped_gap == 1


def test_duplicate_minutes_keep_the_last_row() -> None:
    rows = clean_rows()
    dup = Rows(
        *(
            np.concatenate([getattr(rows, k), getattr(rows, k)[5:6]])
            for k in ("node", "network", "minute", "values", "label")
        )
    )
    dup.values[-1] = 999.0
    windows, _, report = make_windows(dup, WindowingOptions(stride_minutes=60))
    assert report.duplicate_minutes == 1 and windows[0, 5, 0] == 999.0


def test_a_window_takes_a_fault_label_only_when_the_fault_covers_enough_of_it() -> None:
    rows = clean_rows(120)
    assert rows.label is not None
    rows.label[50:60] = "dns_failure"  # 10 minutes: too short for a window that holds all of it
    options = WindowingOptions(stride_minutes=30, min_fault_minutes=20)
    _, labels, report = make_windows(rows, options)
    assert report.dropped_ambiguous == 2 and list(labels) == ["normal"]  # windows at 0, 30 | 60
    rows.label[30:60] = "dns_failure"
    _, labels, _ = make_windows(rows, options)
    assert list(labels) == ["dns_failure", "dns_failure", "normal"]


def test_with_onset_minutes_a_window_ending_in_a_fault_that_began_inside_it_takes_its_label() -> None:
    onset = clean_rows(120)
    assert onset.label is not None
    onset.label[55:] = "dns_failure"  # the window at 0 ends 5 minutes into the fault
    ended = clean_rows(120)
    assert ended.label is not None
    ended.label[40:50] = "dns_failure"  # 10 minutes inside the windows at 0 and 30, over before they end
    strict = WindowingOptions(stride_minutes=30, min_fault_minutes=20)
    assert list(make_windows(onset, strict)[1]) == ["dns_failure", "dns_failure"]  # windows at 30 | 60
    for minutes, expected in ((5, ["dns_failure"] * 3), (6, ["dns_failure"] * 2)):
        options = WindowingOptions(stride_minutes=30, min_fault_minutes=20, min_onset_minutes=minutes)
        assert list(make_windows(onset, options)[1]) == expected
        _, labels, report = make_windows(ended, options)
        assert list(labels) == ["normal"] and report.dropped_ambiguous == 2


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_simulated_rows_round_trip_through_the_file_format_and_window_cleanly(
    tmp_path: Path, suffix: str
) -> None:
    rows = Rows.concat(
        [simulate_node_rows(PROFILES["metro-eu"], f"pcscf-{i}", START, 720, seed=i) for i in range(2)]
    )
    path = tmp_path / f"rows{suffix}"
    write_rows(rows, path)
    back = read_rows(path)
    assert np.array_equal(back.values, rows.values, equal_nan=True) and np.array_equal(
        back.minute, rows.minute
    )
    assert back.label is not None and rows.label is not None and (back.label == rows.label).all()
    windows, labels, report = make_windows(back)
    assert len(labels) == report.windows > 0 and np.isfinite(windows).all() and (windows >= 0).all()
    assert report.nodes == 2


def test_a_file_missing_a_statistic_is_refused_by_name(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"node": ["a"], "network": ["n"], "minute": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing columns req_register_initial"):
        read_rows(tmp_path / "bad.parquet")


def test_an_isolated_out_of_contract_value_is_counted_by_column_and_repaired_as_lost() -> None:
    rows = clean_rows()
    rows.values[50, FEATURE_INDEX["lat_bye_to_200_mean_ms"]] = -3.0  # not a counter: not a reset
    rows.values[70, FEATURE_INDEX["kpi_answer_seizure_ratio"]] = 1.5
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=60))
    assert report.out_of_contract == {"lat_bye_to_200_mean_ms": 1, "kpi_answer_seizure_ratio": 1}
    assert report.counter_resets == 0 and report.values_interpolated == 2
    assert report.windows == 3 and report.dropped_out_of_contract == 0
    assert windows[0, 50, FEATURE_INDEX["lat_bye_to_200_mean_ms"]] == 51.0
    assert windows[1, 10, FEATURE_INDEX["kpi_answer_seizure_ratio"]] == pytest.approx(0.071)
    assert "2 values out of contract in 2 columns" in report.summary()


def test_a_column_filled_differently_makes_its_windows_unusable_and_says_which_column() -> None:
    rows = clean_rows()
    percent = FEATURE_INDEX["kpi_registration_success_rate"]
    rows.values[:, percent] = 99.0  # a ratio exported in percent
    rows.values[120:, percent] = 0.99  # ... until the exporter is fixed
    windows, _, report = make_windows(rows, WindowingOptions(stride_minutes=30))
    # Windows at 0, 30, 60 and 90 hold the percent minutes; the one at 120 does not.
    assert report.dropped_out_of_contract == 4 and report.windows == 1 and len(windows) == 1
    assert report.dropped_out_of_contract_by_column == {"kpi_registration_success_rate": 4}
    assert report.out_of_contract == {"kpi_registration_success_rate": 120}
    assert np.isfinite(windows).all() and np.allclose(windows[..., percent], 0.99)
    assert report.contract_summary() == (
        "120 values out of contract in 1 column (worst: kpi_registration_success_rate 120) in 180 rows; "
        "4 windows dropped as unusable (worst columns: kpi_registration_success_rate 4)"
    )
    assert report.to_dict()["out_of_contract"] == {"kpi_registration_success_rate": 120}


def test_a_few_values_out_of_contract_in_a_column_are_tolerated_and_more_are_not() -> None:
    rows = clean_rows(60)
    ratio = FEATURE_INDEX["kpi_answer_seizure_ratio"]
    rows.values[[10, 20, 30, 40, 50], ratio] = 2.0  # 5 scattered minutes: each repaired
    _, _, report = make_windows(rows)
    assert report.windows == 1 and report.values_interpolated == 5
    rows.values[55, ratio] = 2.0  # a sixth: the column is not glitched, it is filled differently
    _, _, report = make_windows(rows)
    assert report.windows == 0 and report.dropped_out_of_contract == 1 and report.dropped_gap == 0
