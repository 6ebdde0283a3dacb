"""Every streaming node's last hour of minutes in memory, and the window each new minute completes.

A node's minutes live in a ring of `steps` rows (a row's position is its minute modulo
steps), each with the minute it holds. Redis keeps the same ring as one string per node,
each row an int64 minute and the float32 values at a fixed offset (row_dtype), so a row
goes to Redis as its bytes and a node comes back with one GET and one np.frombuffer.
Nodes share preallocated chunks of rows, so a node costs its rows and nothing per minute
beyond one row copy; whether a row needs repair is decided for a whole request at once
(clean_rows).

A window whose minutes all arrived clean (no lost value, counter reset or value out of
contract) is read straight from the ring; any other is repaired by the trainer's own
windowing code (traffic/windowing.py: repair_grid, usable_windows) and dropped when it
cannot be, every repair counted in one RepairReport. A value lost in the newest minute (no
later minute yet) or in the oldest ones (no earlier minute left in the ring) holds the
nearest value, as the trainer's windowing does at a node's last and first minutes (where a
lost run crosses a window's edge, the trainer, which holds the node's minutes either side,
interpolates instead: traffic/windowing.py); a probe outage of up to max_outage_minutes is
bridged, so a node is diagnosed from its first minute back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

import numpy as np

from faultprint.traffic.contract import IS_COUNT, out_of_contract
from faultprint.traffic.windowing import RepairReport, WindowingOptions, repair_grid, usable_windows

NodeKey = tuple[str, str]  # (network, node)

# Nodes per preallocated chunk: 1024 nodes of 60 x 129 minutes are 32 MB.
CHUNK_NODES = 1024


class Arrival(Enum):
    """What a minute did to its node's ring."""

    NEWEST = "newest"  # the node's newest minute: its window is due for a diagnosis
    REORDERED = "reordered"  # older than the newest, within the window, and new: fills a hole
    DUPLICATE = "duplicate"  # the ring already holds this minute
    LATE = "late"  # older than the node's window


def row_dtype(features: int) -> np.dtype:
    """One ring row: the minute it holds (-1: none) and its statistics, as Redis stores it."""
    return np.dtype([("minute", "<i8"), ("values", "<f4", (features,))])


@dataclass
class _Chunk:
    minutes: np.ndarray  # (CHUNK_NODES, steps) int64: the minute each row holds, -1 none
    values: np.ndarray  # (CHUNK_NODES, steps, features) float32
    clean: np.ndarray  # (CHUNK_NODES, steps) bool: the row arrived with nothing to repair


class NodeWindows:
    """The rings of every node this replica streams, by (network, node)."""

    def __init__(self, steps: int, features: int, options: WindowingOptions | None = None) -> None:
        self.steps = steps
        self.features = features
        self.dtype = row_dtype(features)
        self.row_bytes = self.dtype.itemsize
        self.options = options or WindowingOptions.for_steps(steps)
        self.report = RepairReport()
        # For each ring position a window may start at, the positions of its rows in order.
        self._orders = [np.roll(np.arange(steps), -start) for start in range(steps)]
        self._chunks: list[_Chunk] = []
        self._slots: dict[NodeKey, int] = {}
        self._keys: list[NodeKey | None] = []
        self._free: list[int] = []
        # Per slot: the newest minute, the first minute held since the node (re)started, and
        # when (monotonic seconds) its last minute arrived.
        self._newest = np.zeros(0, np.int64)
        self._first = np.zeros(0, np.int64)
        self._seen = np.zeros(0, np.float64)

    def __len__(self) -> int:
        return len(self._slots)

    def slot(self, key: NodeKey) -> int | None:
        return self._slots.get(key)

    def key(self, slot: int) -> NodeKey:
        key = self._keys[slot]
        assert key is not None
        return key

    def add(self, key: NodeKey, ring: bytes | None = None, through: int | None = None) -> int:
        """A slot for a node, restored from its ring's bytes (as Redis keeps them) if given,
        without the rows of minutes after `through` when it is given."""
        slot = self._allocate(key)
        minutes, values, clean = self._at(slot)
        minutes[:] = -1
        values[:] = 0
        clean[:] = False
        self._newest[slot] = self._first[slot] = -1
        self._seen[slot] = time.monotonic()
        rows = 0 if ring is None else min(len(ring) // self.row_bytes, self.steps)
        if rows:
            # Redis grows a ring's string to its highest row written so far, filling the gap
            # with zeros: a row of minute 0 (never a probe's minute) was never written.
            restored = np.frombuffer(ring, self.dtype, count=rows)  # type: ignore[arg-type]
            minutes[:rows], values[:rows] = restored["minute"], restored["values"]
            minutes[minutes == 0] = -1
            if through is not None:
                minutes[minutes > through] = -1
            held = minutes[minutes >= 0]
            if len(held):
                self._newest[slot], self._first[slot] = held.max(), held.min()
                clean[:] = (minutes >= 0) & clean_rows(values)
        return slot

    def put(self, slot: int, minute: int, row: np.ndarray, row_clean: bool | None = None) -> Arrival:
        """Keeps one minute's row (float32, features long) in the node's ring; row_clean is
        clean_rows of it, when the caller has it for many rows at once."""
        minutes, values, clean = self._at(slot)
        position = minute % self.steps
        newest = int(self._newest[slot])
        self._seen[slot] = time.monotonic()
        if minute <= newest - self.steps:
            return Arrival.LATE
        if minutes[position] == minute:
            return Arrival.DUPLICATE
        arrival = Arrival.NEWEST if minute > newest else Arrival.REORDERED
        if arrival is Arrival.NEWEST:
            if newest < 0 or minute - newest > self.steps:
                self._first[slot] = minute  # a node starting, or back after its window emptied
            elif minute - newest > 1:
                self.report.missing_minutes += minute - newest - 1
            self._newest[slot] = minute
        else:
            self._first[slot] = min(int(self._first[slot]), minute)
        minutes[position] = minute
        values[position] = row
        clean[position] = clean_rows(row[None, :])[0] if row_clean is None else row_clean
        return arrival

    def window(self, slot: int) -> np.ndarray | None:
        """The node's window ending at its newest minute (steps, features) float32, repaired as
        the trainer repairs windows; None until it has a full hour, or while it cannot be read."""
        newest, first = int(self._newest[slot]), int(self._first[slot])
        if newest < 0 or newest - first + 1 < self.steps:
            return None
        minutes, values, clean = self._at(slot)
        # The ring from the oldest minute of the window: the row after the newest, wrapped.
        start = (newest + 1) % self.steps
        order = self._orders[start]
        expected = np.arange(newest - self.steps + 1, newest + 1)
        present = minutes[order] == expected
        if present.all() and clean[order].all():
            self.report.windows += 1
            return values[order]
        grid = values[order].astype(np.float64)
        grid[~present] = np.nan
        repair = repair_grid(grid, self.options, self.report)
        if not usable_windows(grid, repair, np.zeros(1, np.int64), self.options, self.report)[0]:
            return None
        self.report.windows += 1
        return grid.astype(np.float32)

    def newest_rows(self, slot: int, count: int, until: int | None = None) -> np.ndarray:
        """The minutes that arrived among the count up to until (default: the node's newest),
        oldest first (rows, features) float32."""
        newest = int(self._newest[slot]) if until is None else until
        if newest < 0:
            return np.zeros((0, self.features), np.float32)
        minutes, values, _ = self._at(slot)
        wanted = np.arange(newest - count + 1, newest + 1)
        positions = wanted % self.steps
        return values[positions][minutes[positions] == wanted]

    def row_minutes(self, slot: int, positions: list[int]) -> list[int]:
        """The minute each ring row at positions holds."""
        minutes, _, _ = self._at(slot)
        return [int(minutes[p]) for p in positions]

    def ring_rows(self, slot: int, positions: list[int]) -> list[bytes]:
        """The ring rows at positions, as Redis keeps them."""
        minutes, values, _ = self._at(slot)
        return [minutes[p].tobytes() + values[p].tobytes() for p in positions]

    def newest(self, slot: int) -> int:
        return int(self._newest[slot])

    def idle(self, idle_s: float, now: float | None = None) -> list[NodeKey]:
        """The nodes no minute has arrived for in idle_s seconds."""
        now = time.monotonic() if now is None else now
        live = np.array([k is not None for k in self._keys], bool)
        stale = np.flatnonzero(live & (self._seen[: len(self._keys)] < now - idle_s))
        return [self.key(int(s)) for s in stale]

    def remove(self, key: NodeKey) -> None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            self._keys[slot] = None
            self._free.append(slot)

    def _allocate(self, key: NodeKey) -> int:
        if key in self._slots:
            return self._slots[key]
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slots[key] = slot
        self._keys[slot] = key
        return slot

    def _grow(self) -> None:
        start = len(self._keys)
        self._chunks.append(_Chunk(
            np.full((CHUNK_NODES, self.steps), -1, np.int64),
            np.zeros((CHUNK_NODES, self.steps, self.features), np.float32),
            np.zeros((CHUNK_NODES, self.steps), bool),
        ))  # fmt: skip
        self._keys.extend([None] * CHUNK_NODES)
        self._free.extend(range(start + CHUNK_NODES - 1, start - 1, -1))
        for name in ("_newest", "_first", "_seen"):
            grown = np.full(start + CHUNK_NODES, -1, getattr(self, name).dtype)
            grown[:start] = getattr(self, name)
            setattr(self, name, grown)

    def _at(self, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chunk = self._chunks[slot // CHUNK_NODES]
        at = slot % CHUNK_NODES
        return chunk.minutes[at], chunk.values[at], chunk.clean[at]

    def memory_bytes(self) -> int:
        """Bytes of the preallocated rings (every chunk, used or free)."""
        return sum(c.minutes.nbytes + c.values.nbytes + c.clean.nbytes for c in self._chunks)


def clean_rows(values: np.ndarray) -> np.ndarray:
    """Per row, whether it has nothing windowing would repair: no lost value, counter reset or
    value out of contract."""
    return ~(np.isnan(values) | ((values < 0) & IS_COUNT) | out_of_contract(values, "rows")).any(axis=-1)
