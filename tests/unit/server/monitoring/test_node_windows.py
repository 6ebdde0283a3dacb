"""Every node's last hour in a ring: arrivals, the clean fast path, and repairs that must match the
trainer's windowing (traffic/windowing.py) exactly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from faultprint.server.monitoring import node_windows
from faultprint.server.monitoring.node_windows import CHUNK_NODES, Arrival, NodeWindows
from faultprint.traffic.catalogue import NUM_FEATURES
from faultprint.traffic.contract import IS_COUNT
from faultprint.traffic.rows import Rows
from faultprint.traffic.simulator import PROFILES, simulate_windows
from faultprint.traffic.windowing import cut_windows

STEPS = 60
KEY = ("metro-eu", "pcscf-01")
# A realistic UTC minute that is not a multiple of 60, so the ring wraps mid-hour.
T0 = 28_000_017


@pytest.fixture(scope="module")
def minutes() -> np.ndarray:
    """Three hours of valid normal minutes (180, 129) float32, as a probe sends them."""
    windows = simulate_windows(PROFILES["metro-eu"], ["normal"], 3, seed=11)[0]
    rows = windows.reshape(-1, NUM_FEATURES)
    assert rows.dtype == np.float32
    return rows


def ring() -> tuple[NodeWindows, int]:
    windows = NodeWindows(STEPS, NUM_FEATURES)
    return windows, windows.add(KEY)


def put_all(windows: NodeWindows, slot: int, rows: np.ndarray, offsets) -> list[Arrival]:
    return [windows.put(slot, T0 + int(i), rows[i]) for i in offsets]


def trainer_window(rows: np.ndarray, offsets: list[int]) -> tuple[np.ndarray, object]:
    """The window cut_windows makes of exactly these minutes (one window: they span one hour)."""
    offsets = sorted(offsets)
    assert offsets[-1] - offsets[0] + 1 == STEPS
    n = len(offsets)
    cut = cut_windows(
        Rows(
            node=np.full(n, KEY[1], dtype=object),
            network=np.full(n, KEY[0], dtype=object),
            minute=np.array([T0 + i for i in offsets], np.int64),
            values=rows[offsets].astype(np.float64),
            label=None,
        )
    )
    assert len(cut.windows) == 1
    return cut.windows[0], cut.report


# -- the window -------------------------------------------------------------------------


def test_no_window_until_a_full_hour_has_arrived(minutes):
    windows, slot = ring()
    assert windows.window(slot) is None  # nothing yet
    for i in range(STEPS - 1):
        assert windows.put(slot, T0 + i, minutes[i]) is Arrival.NEWEST
        assert windows.window(slot) is None
    windows.put(slot, T0 + STEPS - 1, minutes[STEPS - 1])
    window = windows.window(slot)
    assert window is not None
    assert window.shape == (STEPS, NUM_FEATURES) and window.dtype == np.float32
    assert windows.newest(slot) == T0 + STEPS - 1


def test_clean_minutes_give_exactly_those_rows_in_minute_order_across_the_ring_wrap(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(STEPS - 1))
    for newest in range(STEPS - 1, 150):
        windows.put(slot, T0 + newest, minutes[newest])
        assert_array_equal(windows.window(slot), minutes[newest - STEPS + 1 : newest + 1])
    report = windows.report
    assert report.windows == 150 - STEPS + 1
    assert report.missing_minutes == 0 and report.values_interpolated == 0 and report.counter_resets == 0


def test_the_clean_window_matches_the_trainers_window(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(100))
    expected, _ = trainer_window(minutes, list(range(40, 100)))
    assert_array_equal(windows.window(slot), expected)


def test_the_returned_window_is_a_copy_of_the_ring(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(STEPS))
    windows.window(slot)[:] = -1.0
    assert_array_equal(windows.window(slot), minutes[:STEPS])


# -- arrivals ---------------------------------------------------------------------------


def test_a_minute_already_held_is_a_duplicate_and_changes_nothing(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(70))
    assert windows.put(slot, T0 + 69, minutes[0]) is Arrival.DUPLICATE  # the newest, again
    assert windows.put(slot, T0 + 30, minutes[0]) is Arrival.DUPLICATE  # inside the window
    assert windows.newest(slot) == T0 + 69
    assert_array_equal(windows.window(slot), minutes[10:70])


def test_a_minute_older_than_the_window_is_late(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(70))
    # The window holds T0+10 .. T0+69: T0+9 and anything older is late, whether held once or not.
    assert windows.put(slot, T0 + 9, minutes[9]) is Arrival.LATE
    assert windows.put(slot, T0 + 9 - STEPS, minutes[0]) is Arrival.LATE
    assert windows.put(slot, T0, minutes[0]) is Arrival.LATE
    assert windows.newest(slot) == T0 + 69
    assert_array_equal(windows.window(slot), minutes[10:70])


def test_the_oldest_minute_of_the_window_is_not_late(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, [*range(0, 10), *range(11, 70)])
    # T0+10 is newest - 59: still in the window, and missing: it fills its hole.
    assert windows.put(slot, T0 + 10, minutes[10]) is Arrival.REORDERED
    assert_array_equal(windows.window(slot), minutes[10:70])


def test_a_reordered_minute_fills_a_hole_and_makes_the_window_usable(minutes):
    windows, slot = ring()
    missing = range(40, 71)  # 31 minutes: more than an outage that is bridged
    assert set(put_all(windows, slot, minutes, [i for i in range(80) if i not in missing])) == {
        Arrival.NEWEST
    }
    assert windows.report.missing_minutes == 31
    assert windows.window(slot) is None
    arrivals = put_all(windows, slot, minutes, missing)
    assert arrivals == [Arrival.REORDERED] * 31
    assert windows.newest(slot) == T0 + 79
    assert_array_equal(windows.window(slot), minutes[20:80])


def test_reordered_minutes_before_the_first_one_count_towards_a_full_hour(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(5, STEPS))
    assert windows.window(slot) is None
    assert put_all(windows, slot, minutes, range(5)) == [Arrival.REORDERED] * 5
    assert_array_equal(windows.window(slot), minutes[:STEPS])


# -- repairs, shared with the trainer's windowing ---------------------------------------


def test_a_short_gap_is_interpolated_exactly_as_cut_windows_does(minutes):
    windows, slot = ring()
    missing = set(range(70, 75))  # 5 minutes: the most that is interpolated
    present = [i for i in range(100) if i not in missing]
    put_all(windows, slot, minutes, present)
    assert windows.report.missing_minutes == 5
    window = windows.window(slot)
    assert window is not None and window.dtype == np.float32
    expected, trainer = trainer_window(minutes, [i for i in present if i >= 40])
    assert_array_equal(window, expected)
    assert windows.report.values_interpolated == trainer.values_interpolated == 5 * NUM_FEATURES
    assert windows.report.missing_minutes == trainer.missing_minutes == 5
    # The minutes that arrived are untouched; the missing ones lie between their neighbours.
    assert_array_equal(window[[i - 40 for i in present if i >= 40]], minutes[[i for i in present if i >= 40]])
    low = np.minimum(minutes[69], minutes[75])
    high = np.maximum(minutes[69], minutes[75])
    assert np.all((window[30:35] >= low - 1e-3 * np.abs(low)) & (window[30:35] <= high + 1e-3 * np.abs(high)))


def test_a_probe_outage_is_bridged_from_the_first_minute_back_exactly_as_cut_windows_does(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(50))  # then minutes 50-79 (30) are missing
    put_all(windows, slot, minutes, [80])
    window = windows.window(slot)
    assert window is not None  # the node's first minute back is diagnosed
    low, high = np.minimum(minutes[49], minutes[80]), np.maximum(minutes[49], minutes[80])
    assert np.all((window[29:59] >= low - 1e-3 * np.abs(low)) & (window[29:59] <= high + 1e-3 * np.abs(high)))
    put_all(windows, slot, minutes, range(81, 100))
    present = [i for i in range(40, 100) if not 50 <= i < 80]
    expected, trainer = trainer_window(minutes, present)
    assert_array_equal(windows.window(slot), expected)
    assert trainer.dropped_gap == 0 and windows.report.missing_minutes == 30


def test_an_outage_longer_than_max_outage_gives_no_window_until_at_most_that_is_left_in_it(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(70))  # then minutes 70-100 (31) are missing
    assert windows.window(slot) is not None
    for newest in range(101, 180):
        windows.put(slot, T0 + newest, minutes[newest])
        window = windows.window(slot)
        oldest = newest - STEPS + 1
        if oldest <= 70:
            assert window is None, newest
        else:  # what is left of the outage, at the window's oldest minutes, holds the next value
            expected = minutes[oldest : newest + 1].copy()
            expected[: max(0, 101 - oldest)] = minutes[101]
            assert_array_equal(window, expected)
    assert windows.report.missing_minutes == 31
    assert windows.report.dropped_gap == 129 - 101 + 1


def test_a_gap_longer_than_the_window_restarts_the_hour(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(STEPS))
    put_all(windows, slot, minutes, range(130, 180))  # 70 minutes later: the old hour is gone
    assert windows.window(slot) is None  # 50 minutes since the node came back
    assert windows.newest_rows(slot, STEPS).shape == (50, NUM_FEATURES)


def test_a_counter_reset_is_repaired_exactly_as_cut_windows_does(minutes):
    rows = minutes.copy()
    column = int(np.flatnonzero(IS_COUNT & (rows[80] > 10))[0])
    rows[80, column] = -rows[80, column] * 50  # a probe restart: the delta goes negative
    windows, slot = ring()
    put_all(windows, slot, rows, range(100))
    window = windows.window(slot)
    assert window is not None
    expected, trainer = trainer_window(rows, list(range(40, 100)))
    assert_array_equal(window, expected)
    assert window[40, column] >= 0
    assert window[40, column] == pytest.approx((rows[79, column] + rows[81, column]) / 2, rel=1e-6)
    assert windows.report.counter_resets == trainer.counter_resets == 1
    assert windows.report.values_interpolated == trainer.values_interpolated == 1


def test_a_lost_value_is_repaired_exactly_as_cut_windows_does(minutes):
    rows = minutes.copy()
    rows[75, 3] = np.nan
    rows[76, 3] = np.nan
    rows[90, 100] = np.nan
    windows, slot = ring()
    put_all(windows, slot, rows, range(100))
    expected, trainer = trainer_window(rows, list(range(40, 100)))
    assert_array_equal(windows.window(slot), expected)
    assert windows.report.missing_values == trainer.missing_values == 3


def test_a_gap_and_a_reset_together_match_cut_windows(minutes):
    rows = minutes.copy()
    column = int(np.flatnonzero(IS_COUNT & (rows[55] > 10))[-1])
    rows[55, column] = -1.0
    present = [i for i in range(110) if i not in (60, 61, 62, 95)]
    windows, slot = ring()
    put_all(windows, slot, rows, present)
    expected, _ = trainer_window(rows, [i for i in present if i >= 50])
    assert_array_equal(windows.window(slot), expected)


# -- newest rows, restoring, idle, remove, growth ---------------------------------------


def test_newest_rows_are_the_newest_minutes_that_arrived_oldest_first(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, [i for i in range(90) if i != 88])
    assert_array_equal(windows.newest_rows(slot, 3), minutes[[87, 89]])
    assert_array_equal(windows.newest_rows(slot, 1), minutes[[89]])
    assert_array_equal(windows.newest_rows(slot, STEPS), minutes[[i for i in range(30, 90) if i != 88]])


@pytest.mark.parametrize(
    "missing",
    [(), (70, 71, 72), (60, 61, 62, 63, 64, 65, 66)],
    ids=["clean", "short gap", "long gap"],
)
def test_a_node_restored_from_its_ring_bytes_gives_the_same_window(minutes, missing):
    rows = minutes.copy()
    column = int(np.flatnonzero(IS_COUNT & (rows[85] > 10))[0])
    rows[85, column] = -3.0
    windows, slot = ring()
    put_all(windows, slot, rows, [i for i in range(100) if i not in missing])
    saved = b"".join(windows.ring_rows(slot, list(range(STEPS))))
    assert len(saved) == STEPS * windows.row_bytes

    restored = NodeWindows(STEPS, NUM_FEATURES)
    other = restored.add(("metro-eu", "pcscf-00"))  # the node gets another slot there
    again = restored.add(KEY, saved)
    assert again != other
    assert restored.newest(again) == windows.newest(slot)
    before, after = windows.window(slot), restored.window(again)
    if before is None:
        assert after is None
    else:
        assert_array_equal(after, before)
    assert_array_equal(restored.newest_rows(again, 5), windows.newest_rows(slot, 5))
    # Both go on alike, minute by minute.
    for i in range(100, 170):
        assert restored.put(again, T0 + i, rows[i]) is windows.put(slot, T0 + i, rows[i])
        before, after = windows.window(slot), restored.window(again)
        assert (before is None) == (after is None)
        if before is not None:
            assert_array_equal(after, before)


def test_a_ring_redis_holds_only_in_part_is_restored_as_far_as_it_goes(minutes):
    """Redis grows a node's ring string to the highest row written, zero-filling the gap: a node
    still filling its first hour comes back with the rows it has, and the zero rows are empty."""
    windows, slot = ring()
    first = 28_000_040  # rows 20..44 of the ring: a string of 45 rows, 0..19 zero-filled
    for i in range(25):
        windows.put(slot, first + i, minutes[i])
    written = [(first + i) % STEPS for i in range(25)]
    held = bytearray(max(written) * windows.row_bytes + windows.row_bytes)
    for position, row in zip(written, windows.ring_rows(slot, written), strict=True):
        held[position * windows.row_bytes : (position + 1) * windows.row_bytes] = row
    restored = NodeWindows(STEPS, NUM_FEATURES)
    again = restored.add(KEY, bytes(held))
    assert restored.newest(again) == first + 24
    for i in range(25, STEPS):
        restored.put(again, first + i, minutes[i])
    assert restored.window(again) is not None, "the hour completes without starting over"
    assert_array_equal(restored.window(again), minutes[:STEPS])


def test_ring_bytes_past_the_frontier_are_dropped(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(STEPS))
    saved = b"".join(windows.ring_rows(slot, list(range(STEPS))))
    restored = NodeWindows(STEPS, NUM_FEATURES)
    again = restored.add(KEY, saved, through=windows.newest(slot) - 5)
    assert restored.newest(again) == windows.newest(slot) - 5
    assert restored.window(again) is None, "five minutes to resend before the hour is whole again"


def test_idle_lists_the_nodes_no_minute_arrived_for(minutes, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(node_windows, "time", SimpleNamespace(monotonic=lambda: clock.now))
    windows = NodeWindows(STEPS, NUM_FEATURES)
    quiet, busy = ("metro-eu", "quiet"), ("metro-eu", "busy")
    windows.add(quiet)
    busy_slot = windows.add(busy)
    clock.now = 1100.0
    windows.put(busy_slot, T0, minutes[0])
    assert windows.idle(60.0, now=1120.0) == [quiet]
    assert sorted(windows.idle(60.0, now=1200.0)) == sorted([quiet, busy])
    assert windows.idle(60.0, now=1050.0) == []
    clock.now = 1300.0
    assert sorted(windows.idle(60.0)) == sorted([quiet, busy])  # now defaults to the clock
    windows.remove(quiet)
    assert windows.idle(60.0) == [busy]


def test_remove_forgets_the_node_and_add_after_remove_starts_empty(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(STEPS))
    assert len(windows) == 1 and windows.slot(KEY) == slot and windows.key(slot) == KEY
    windows.remove(KEY)
    windows.remove(KEY)  # removing twice is harmless
    assert len(windows) == 0 and windows.slot(KEY) is None
    newcomer = ("metro-eu", "pcscf-99")
    reused = windows.add(newcomer)
    assert reused == slot  # the freed slot is used again...
    assert windows.key(reused) == newcomer
    assert windows.newest(reused) == -1  # ...with nothing of the node that held it
    assert windows.window(reused) is None
    put_all(windows, reused, minutes, range(STEPS, 2 * STEPS))
    assert_array_equal(windows.window(reused), minutes[STEPS : 2 * STEPS])


def test_adding_a_node_twice_gives_its_slot(minutes):
    windows, slot = ring()
    put_all(windows, slot, minutes, range(STEPS))
    assert windows.add(KEY) == slot
    assert len(windows) == 1


def test_more_nodes_than_a_chunk_grow_the_storage(minutes):
    windows = NodeWindows(STEPS, NUM_FEATURES)
    keys = [("metro-eu", f"pcscf-{i:04d}") for i in range(CHUNK_NODES + 2)]
    slots = [windows.add(k) for k in keys[:CHUNK_NODES]]
    one_chunk = windows.memory_bytes()
    assert one_chunk == CHUNK_NODES * STEPS * (windows.row_bytes + 1)
    slots += [windows.add(k) for k in keys[CHUNK_NODES:]]
    assert windows.memory_bytes() == 2 * one_chunk
    assert len(windows) == len(keys) and len(set(slots)) == len(keys)
    # Nodes in either chunk keep their own minutes.
    first, last = slots[0], slots[-1]
    put_all(windows, first, minutes, range(STEPS))
    put_all(windows, last, minutes, range(STEPS, 2 * STEPS))
    assert_array_equal(windows.window(first), minutes[:STEPS])
    assert_array_equal(windows.window(last), minutes[STEPS : 2 * STEPS])
    assert windows.window(slots[CHUNK_NODES]) is None
    assert windows.key(last) == keys[-1]


def _cut(rows: np.ndarray, first: int, last: int):
    n = last - first
    return cut_windows(Rows(np.full(n, KEY[1], dtype=object), np.full(n, KEY[0], dtype=object),
                            np.arange(T0 + first, T0 + last), rows[first:last].astype(np.float64), None))  # fmt: skip


def test_a_reset_at_the_oldest_minute_of_the_window_holds_the_next_value_as_cut_windows_does(minutes):
    rows = minutes.copy()
    column = int(np.flatnonzero(IS_COUNT & (rows[40] > 10))[0])
    rows[40, column] = -1.0  # nothing before it in the window to interpolate from
    windows, slot = ring()
    put_all(windows, slot, rows, range(100))
    window = windows.window(slot)
    assert window is not None and window[0, column] == rows[41, column]
    cut = _cut(rows, 40, 100)
    assert_array_equal(window, cut.windows[0])
    assert windows.report.values_interpolated == cut.report.values_interpolated == 1


def test_a_value_lost_in_the_newest_minute_holds_the_one_before(minutes):
    rows = minutes.copy()
    rows[99, [3, 100]] = np.nan  # no later minute yet to interpolate towards
    windows, slot = ring()
    put_all(windows, slot, rows, range(100))
    window = windows.window(slot)
    assert window is not None
    assert_array_equal(window[-1, [3, 100]], rows[98, [3, 100]])
    assert_array_equal(window, _cut(rows, 40, 100).windows[0])
    # The next minute arrives: the lost values now lie between their neighbours.
    windows.put(slot, T0 + 100, rows[100])
    assert_array_equal(windows.window(slot)[-2, 3], (rows[98, 3] + rows[100, 3]) / 2)


def test_values_lost_for_more_than_five_newest_minutes_give_no_window(minutes):
    rows = minutes.copy()
    rows[94:100, 7] = np.nan  # 6 minutes
    windows, slot = ring()
    put_all(windows, slot, rows, range(100))
    assert windows.window(slot) is None
    assert len(_cut(rows, 40, 100).windows) == 0


def test_a_model_of_short_windows_gets_a_ring_that_bridges_half_of_one(minutes):
    windows = NodeWindows(8, NUM_FEATURES)
    slot = windows.add(KEY)
    assert windows.options.max_outage_minutes == 4
    put_all(windows, slot, minutes, [0, 1, 2, 7])  # minutes 3-6 lost: bridged
    assert_array_equal(windows.window(slot)[[0, 1, 2, 7]], minutes[[0, 1, 2, 7]])


def test_newest_rows_of_a_node_with_no_minutes_is_empty():
    windows, slot = ring()
    assert windows.newest_rows(slot, 5).shape == (0, NUM_FEATURES)
