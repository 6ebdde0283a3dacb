"""Turns per-minute probe rows into labelled 60-minute windows, repairing what probes damage.

Real exports have missing minutes, values lost in export, probe outages, and counter
resets (a probe restart makes a counter's delta negative). Short gaps are interpolated,
and an outage is bridged unless it runs into a window's newest minutes (a stream has
nothing after them yet); a window that still holds a gap is dropped; every repair and
drop is counted in a RepairReport so a training run says what it did to its data instead
of failing on one bad row.

The trainer repairs a node's whole run of minutes, the server's minute streams the 60 in a
node's ring, with the same code, so the two differ only where a lost run crosses a
window's edge: the trainer interpolates across the edge towards a minute the window does
not hold (so a window whose newest 1-5 minutes were lost lies on the line towards the
minute after them), where the server holds the nearest value of the window; and a run
longer than max_outage_minutes that has partly left the window drops the trainer's
window, where the server holds what is left of it (up to max_outage_minutes) at the
window's oldest minutes.

Rows are checked against the probe data contract (traffic/contract.py) on the way in:
a value out of its column's valid range is counted by column and treated as lost (so
an isolated one is interpolated). A window that the contract's WindowRule finds unusable
(a column out of contract in more than 5 of its minutes, or over 1 % of its values), or
that still holds an out-of-contract value no interpolation could repair, is dropped as
out of contract, with its worst column, before any other reason: the exporter fills
that column differently, and interpolating would invent the column.

A window takes a fault's label when that fault covers at least min_fault_minutes of
it (the original design labels a window by any fault inside it; a fault seen for a
minute or two is indistinguishable from normal, so such windows are dropped as
ambiguous rather than mislabelled). With min_onset_minutes, a window whose last minutes
are a fault that began inside it takes the fault's label from that many minutes on: the
window a node streams a few minutes into a fault, which a model must name early.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from faultprint.traffic.catalogue import FEATURE_NAMES, NUM_FEATURES, WINDOW_STEPS
from faultprint.traffic.contract import IS_COUNT, WINDOW_RULE, WindowRule, describe_counts, out_of_contract
from faultprint.traffic.rows import Rows
from faultprint.traffic.simulator import NORMAL


@dataclass(frozen=True)
class WindowingOptions:
    steps: int = WINDOW_STEPS
    # Minutes between the starts of consecutive windows of one node.
    stride_minutes: int = 15
    # Runs of up to this many missing minutes (or values) are interpolated, and held from the
    # nearest minute at the end of a node's minutes.
    max_gap_minutes: int = 5
    # A probe outage: a run of up to this many missing minutes (or values) is bridged too, unless
    # it is a window's newest minutes: linearly between the minutes either side, or by holding the
    # first minute after it at a window's oldest end. A window in which a statistic lost more
    # minutes than this in all, or its newest max_gap_minutes + 1, is dropped. A streaming node
    # is then diagnosed from its first minute back after an outage of up to this many minutes.
    max_outage_minutes: int = 30
    # Minutes a fault must cover for a window to take its label.
    min_fault_minutes: int = 20
    # A window ending in a fault's first minutes takes its label when its last this many
    # minutes are all that fault; 0: only min_fault_minutes labels a window.
    min_onset_minutes: int = 0
    # When out-of-contract values make a window unusable (traffic/contract.py).
    window_rule: WindowRule = WINDOW_RULE

    @classmethod
    def for_steps(cls, steps: int) -> WindowingOptions:
        """The defaults for windows of `steps` minutes: a short window bridges at most half of
        itself, and interpolates no more than it bridges."""
        outage = min(cls.max_outage_minutes, steps // 2)
        return cls(steps=steps, max_gap_minutes=min(cls.max_gap_minutes, outage), max_outage_minutes=outage)

    def __post_init__(self) -> None:
        if not 0 <= self.max_gap_minutes <= self.max_outage_minutes < self.steps:
            raise ValueError(
                f"windowing needs 0 <= max_gap_minutes ({self.max_gap_minutes}) <= max_outage_minutes "
                f"({self.max_outage_minutes}) < steps ({self.steps})"
            )


@dataclass
class RepairReport:
    """What windowing repaired and dropped, for the training log and the model's metadata."""

    nodes: int = 0
    rows: int = 0
    duplicate_minutes: int = 0
    missing_minutes: int = 0
    missing_values: int = 0
    counter_resets: int = 0
    # Row values out of their column's valid range (traffic/contract.py), by column.
    out_of_contract: Counter[str] = field(default_factory=Counter)
    values_interpolated: int = 0
    windows: int = 0
    # Windows the contract's WindowRule found unusable, and the worst column of each.
    dropped_out_of_contract: int = 0
    dropped_out_of_contract_by_column: Counter[str] = field(default_factory=Counter)
    dropped_gap: int = 0
    dropped_ambiguous: int = 0
    by_label: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, object]:
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()}

    def summary(self) -> str:
        return (
            f"{self.rows} rows from {self.nodes} nodes -> {self.windows} windows; repaired: "
            f"{self.missing_minutes} missing minutes, {self.missing_values} missing values, "
            f"{self.counter_resets} counter resets, {self.contract_values()} "
            f"({self.values_interpolated} values interpolated), "
            f"{self.duplicate_minutes} duplicate minutes dropped; windows dropped: "
            f"{self.dropped_out_of_contract} out of contract, {self.dropped_gap} "
            f"with a gap over the limit, {self.dropped_ambiguous} with a fault too short to label"
        )

    def contract_values(self, limit: int = 5) -> str:
        """The row values out of contract, with the worst columns: "12 values out of contract in ..."."""
        counts = np.array([self.out_of_contract.get(name, 0) for name in FEATURE_NAMES])
        return describe_counts(counts, limit)

    def contract_summary(self, limit: int = 5) -> str:
        """What the contract check found, worst columns first, for the trainer's log."""
        text = f"{self.contract_values(limit)} in {self.rows} rows"
        if self.dropped_out_of_contract:
            worst = ", ".join(
                f"{n} {c}" for n, c in self.dropped_out_of_contract_by_column.most_common(limit)
            )
            text += f"; {self.dropped_out_of_contract} windows dropped as unusable (worst columns: {worst})"
        return text


@dataclass
class WindowSet:
    """Windows cut from rows, with where each came from: what evaluation and enrolment select by."""

    windows: np.ndarray  # (n, steps, features) float32
    labels: np.ndarray  # (n,) str; "" where the rows had no label
    node: np.ndarray  # (n,) str
    network: np.ndarray  # (n,) str
    start_minute: np.ndarray  # (n,) int64, the UTC minute of each window's first step
    report: RepairReport

    def select(self, keep: np.ndarray) -> WindowSet:
        """The windows where the boolean mask (or index array) keep selects."""
        return WindowSet(self.windows[keep], self.labels[keep], self.node[keep], self.network[keep],
                         self.start_minute[keep], self.report)  # fmt: skip


def cut_windows(rows: Rows, options: WindowingOptions = WindowingOptions()) -> WindowSet:
    """Every usable window of every node in rows, with its origin; see the module docstring."""
    report = RepairReport(rows=len(rows))
    labels_in = rows.label if rows.label is not None else np.full(len(rows), "", dtype=object)
    keys = np.char.add(np.char.add(rows.network.astype(str), "\x00"), rows.node.astype(str))
    windows, labels = [], []
    network: list[str] = []
    node: list[str] = []
    start: list[int] = []
    for key in np.unique(keys):
        at = np.flatnonzero(keys == key)
        report.nodes += 1
        grid, minute_labels, repair = _node_grid(
            rows.minute[at], rows.values[at], labels_in[at].astype(str), options, report
        )
        node_windows, node_labels, starts = _node_windows(grid, minute_labels, repair, options, report)
        windows.append(node_windows)
        labels.extend(node_labels)
        first = int(rows.minute[at].min())
        network += [str(rows.network[at[0]])] * len(starts)
        node += [str(rows.node[at[0]])] * len(starts)
        start += [first + int(s) for s in starts]
    out = np.concatenate(windows) if windows else np.zeros((0, options.steps, NUM_FEATURES), np.float32)
    report.windows = len(labels)
    report.by_label.update(labels)
    return WindowSet(out, np.asarray(labels, dtype=str), np.asarray(node, dtype=str),
                     np.asarray(network, dtype=str), np.asarray(start, dtype=np.int64), report)  # fmt: skip


def make_windows(
    rows: Rows, options: WindowingOptions = WindowingOptions()
) -> tuple[np.ndarray, np.ndarray, RepairReport]:
    """(windows (n, steps, features) float32, labels, report) over every node in rows."""
    cut = cut_windows(rows, options)
    return cut.windows, cut.labels, cut.report


def _node_grid(minute: np.ndarray, values: np.ndarray, labels: np.ndarray, options: WindowingOptions,
               report: RepairReport) -> tuple[np.ndarray, np.ndarray, Repair]:  # fmt: skip
    """A node's rows on a full minute grid, with resets and gaps repaired; and what was repaired."""
    order = np.argsort(minute, kind="stable")
    minute, values, labels = minute[order], values[order], labels[order]
    last = np.r_[minute[1:] != minute[:-1], True]  # keep the last row of a repeated minute
    report.duplicate_minutes += int((~last).sum())
    minute, values, labels = minute[last], values[last], labels[last]
    span = int(minute[-1] - minute[0]) + 1
    grid = np.full((span, values.shape[1]), np.nan)
    grid_labels = np.full(span, "", dtype=object)
    grid[minute - minute[0]] = values
    grid_labels[minute - minute[0]] = labels
    report.missing_minutes += span - len(minute)
    return grid, grid_labels, repair_grid(grid, options, report)


@dataclass(frozen=True)
class Repair:
    """Where a grid's rows broke the data contract, and where a value was lost (a missing
    minute, a lost value, a counter reset or a value out of contract), before repair:
    boolean grids."""

    violation: np.ndarray
    lost: np.ndarray


def repair_grid(grid: np.ndarray, options: WindowingOptions, report: RepairReport) -> Repair:
    """Repairs, in place, a node's minutes on a full minute grid (NaN where a minute or value
    is missing); returns what it found.

    The trainer's windowing and the server's minute streams share this: a counter reset
    and an out-of-contract value are lost values, short runs of lost values are
    interpolated (options.max_gap_minutes) and outages bridged (options.max_outage_minutes).
    """
    lost = np.isnan(grid)
    report.missing_values += int(lost[~lost.all(axis=1)].sum())  # in minutes that arrived
    # A negative count is a probe restart, which the contract allows in rows; any other
    # value outside its column's range breaks the contract. Both are lost values here.
    reset = (grid < 0) & IS_COUNT
    report.counter_resets += int(reset.any(axis=1).sum())
    violation = out_of_contract(grid, "rows")
    counts = violation.sum(axis=0)
    report.out_of_contract.update({FEATURE_NAMES[c]: int(counts[c]) for c in np.flatnonzero(counts)})
    grid[reset | violation] = np.nan
    lost = np.isnan(grid)
    report.values_interpolated += _fill_gaps(grid, options.max_gap_minutes, options.max_outage_minutes)
    return Repair(violation, lost)


def _fill_gaps(grid: np.ndarray, max_gap: int, max_outage: int) -> int:
    """Fills, in place, runs of NaN between two values no longer than max_outage by linear
    interpolation; at the grid's first minutes, up to max_outage, and at its last, up to
    max_gap, with the nearest value (the oldest minute of a window read from a ring has no
    earlier one; a stream's newest minute has no later value yet, and holding one for long
    would invent its traffic)."""
    filled = 0
    for column in np.flatnonzero(np.isnan(grid).any(axis=0)):
        values = grid[:, column]
        valid = np.flatnonzero(~np.isnan(values))
        gaps = np.flatnonzero(np.isnan(values))
        if not len(valid):
            continue
        after = np.searchsorted(valid, gaps)
        before_at = np.where(after > 0, valid[np.maximum(after - 1, 0)], -1)
        after_at = np.where(after < len(valid), valid[np.minimum(after, len(valid) - 1)], len(values))
        short = after_at - before_at - 1 <= np.where(after_at == len(values), max_gap, max_outage)
        # np.interp holds the first and last values beyond the ends.
        values[gaps[short]] = np.interp(gaps[short], valid, values[valid])
        filled += int(short.sum())
    return filled


def _node_windows(
    grid: np.ndarray, minute_labels: np.ndarray, repair: Repair, options: WindowingOptions,
    report: RepairReport,
) -> tuple[np.ndarray, list[str], list[int]]:  # fmt: skip
    """A node's usable windows, their labels and their start offsets on the grid."""
    steps = options.steps
    if len(grid) < steps:
        return np.zeros((0, steps, grid.shape[1]), np.float32), [], []
    starts = np.arange(0, len(grid) - steps + 1, options.stride_minutes)
    complete = usable_windows(grid, repair, starts, options, report)
    kept, labels = [], []
    for start in starts[complete]:
        label = _window_label(minute_labels[start : start + steps], options)
        if label is None:
            report.dropped_ambiguous += 1
            continue
        kept.append(start)
        labels.append(label)
    windows = np.stack([grid[s : s + steps] for s in kept]) if kept else np.zeros((0, steps, grid.shape[1]))
    return windows.astype(np.float32), labels, kept


def usable_windows(
    grid: np.ndarray, repair: Repair, starts: np.ndarray, options: WindowingOptions,
    report: RepairReport,
) -> np.ndarray:  # fmt: skip
    """Which windows of a repaired grid (options.steps long, at starts) can be read: none that
    the contract's WindowRule finds unusable, that still holds a lost value, in which a
    statistic lost more than options.max_outage_minutes minutes, or whose newest minutes
    were bridged (from a minute after the window, which a stream does not have yet); each
    drop is counted. Shared by the trainer's windowing and the server's minute streams."""
    steps, violation = options.steps, repair.violation
    # Out-of-contract values per window and column, and whether any was left unrepaired.
    per_column = _window_sums(violation, starts, steps)
    unrepaired = _window_sums((violation & np.isnan(grid)).any(axis=1, keepdims=True), starts, steps)[:, 0]
    unusable = options.window_rule.unusable(per_column, steps) | (unrepaired > 0)
    report.dropped_out_of_contract += int(unusable.sum())
    report.dropped_out_of_contract_by_column.update(
        FEATURE_NAMES[i] for i in per_column[unusable].argmax(axis=1)
    )
    tail = options.max_gap_minutes + 1
    has_gap = (
        (_window_sums(np.isnan(grid).any(axis=1, keepdims=True), starts, steps)[:, 0] > 0)
        | (_window_sums(repair.lost, starts, steps).max(axis=1) > options.max_outage_minutes)
        | (_window_sums(repair.lost, starts + steps - tail, tail).max(axis=1) >= tail)
    )
    report.dropped_gap += int((~unusable & has_gap).sum())
    return ~unusable & ~has_gap


def _window_sums(flags: np.ndarray, starts: np.ndarray, steps: int) -> np.ndarray:
    """Per window (starting at starts, steps long), the number of true flags (minutes, columns) per column."""
    total = np.zeros((len(flags) + 1, flags.shape[1]), np.int64)
    np.cumsum(flags, axis=0, out=total[1:])
    return total[starts + steps] - total[starts]


def _window_label(minute_labels: np.ndarray, options: WindowingOptions) -> str | None:
    """The dominant fault if it covers enough minutes (or, with min_onset_minutes, the fault
    filling the window's last minutes), normal if none; None when ambiguous."""
    faults = Counter(label for label in minute_labels if label not in ("", NORMAL))
    if not faults:
        return NORMAL if (minute_labels == NORMAL).any() else ""
    fault, minutes = faults.most_common(1)[0]
    if minutes >= options.min_fault_minutes:
        return fault
    onset = options.min_onset_minutes
    if onset and (minute_labels[-onset:] == minute_labels[-1]).all() and minute_labels[-1] in faults:
        return str(minute_labels[-1])
    return None
