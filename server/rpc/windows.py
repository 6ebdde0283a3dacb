"""Decoding and validation of windows: packed float32 bytes to numpy, with no per-value Python work.

A window of the catalogue's 129 statistics is checked against the probe data contract
(traffic/contract.py, docs/data-contract.md). One the contract's WindowRule finds
unusable (a column out of its range in more than 5 minutes, or over 1 % of all values)
is refused with INVALID_ARGUMENT naming the worst column, a value and its valid range:
the exporter fills that column differently and the model would misread the window. A
window with fewer out-of-contract values is served, and its values are counted by
column in faultprint.window.values_out_of_contract.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from faultprint.server import telemetry
from faultprint.server.rpc.errors import InvalidArgument
from faultprint.traffic.catalogue import FEATURE_NAMES, NUM_FEATURES
from faultprint.traffic.contract import STATISTICS, UPPER, WINDOW_RULE, count_out_of_contract
from faultprint.v1 import window_pb2

_LE_FLOAT32 = np.dtype("<f4")
_LE_UINT32 = np.dtype("<u4")


def decode_window(window: window_pb2.Window, steps: int, features: int) -> np.ndarray:
    """The window as a (steps, features) float32 array, checked against the model's input spec."""
    if window.steps != steps or window.features != features:
        raise InvalidArgument(
            f"window shape is ({window.steps} steps, {window.features} features), "
            f"model expects ({steps} steps, {features} features)",
            field="window",
            reason="WINDOW_SHAPE",
        )
    expected = steps * features
    # Each read of a bytes field builds a new bytes object: read it once.
    packed = window.packed_values
    if packed and len(window.values):
        raise InvalidArgument(
            "window sets both packed_values and values; set exactly one (packed_values is the fast path)",
            field="window.values",
        )
    if packed:
        if len(packed) != expected * 4:
            raise InvalidArgument(
                f"packed_values has {len(packed)} bytes, expected {expected * 4} "
                f"({steps} x {features} little-endian float32)",
                field="window.packed_values",
                reason="WINDOW_SHAPE",
            )
        values = np.frombuffer(packed, dtype=_LE_FLOAT32)
    elif len(window.values):
        if len(window.values) != expected:
            raise InvalidArgument(
                f"values has {len(window.values)} floats, expected {expected} ({steps} x {features})",
                field="window.values",
                reason="WINDOW_SHAPE",
            )
        values = np.asarray(window.values, dtype=np.float32)
    else:
        raise InvalidArgument("window is empty: set packed_values (or values)", field="window")
    if features != NUM_FEATURES:
        # A model of another catalogue: the contract does not describe its columns.
        if not np.isfinite(values).all():
            _refuse_non_finite(values, features)
        return values.reshape(steps, features)
    # Every lower bound of the contract is 0, and for float32 values >= 0 the order of
    # their bits read as uint32 is their order as numbers, while a negative value (sign
    # bit set), NaN and Inf (exponent all ones) read larger than any finite upper bound:
    # one integer comparison against the bounds' bits checks finiteness and both bounds.
    # Measured with timeit on a simulated 60 x 129 window (2-core AMD EPYC): 2.7 us, against
    # 2.3 us for the np.isfinite check it replaces; decode_window as a whole 4.7 us, against
    # 4.2 us before the contract. The slow path (about 33 us, counter included) runs only
    # for a window with a value out of contract.
    if not (values.view(_LE_UINT32) <= _upper_bits(steps)).all():
        _check_contract(values.reshape(steps, features))
    return values.reshape(steps, features)


@lru_cache(maxsize=4)
def _upper_bits(steps: int) -> np.ndarray:
    """The contract's upper bounds as float32 bits, one per value of a flat (steps x 129) window.

    A bound array of the window's own shape: numpy compares it about 1.5 us faster than
    it broadcasts one row of bounds.
    """
    upper = UPPER.astype(np.float32)
    # Rounded down where float32 cannot hold a bound, so that no value above it passes.
    upper = np.where(upper > UPPER, np.nextafter(upper, np.float32(0)), upper)
    bits = np.tile(upper.view(_LE_UINT32), steps)
    bits.flags.writeable = False
    return bits


def _refuse_non_finite(values: np.ndarray, features: int) -> None:
    finite = np.isfinite(values.ravel())
    if finite.all():
        return
    bad = int(np.flatnonzero(~finite)[0])
    raise InvalidArgument(
        f"window has a non-finite value (NaN or Inf) at step {bad // features}, "
        f"feature {bad % features}; every value must be finite",
        field="window.packed_values",
        reason="NOT_FINITE",
    )


def _check_contract(window: np.ndarray) -> None:
    """The slow path: refuses an unusable window, counts the out-of-contract values of a usable one."""
    steps, features = window.shape
    _refuse_non_finite(window, features)
    counts = count_out_of_contract(window, "windows")
    if not counts.any():
        return  # -0.0 only: its sign bit fails the fast check
    refused = bool(WINDOW_RULE.unusable(counts, steps))
    outcome = {"outcome": "refused" if refused else "served"}
    for at in np.flatnonzero(counts):
        telemetry.values_out_of_contract.add(int(counts[at]), {**outcome, "column": FEATURE_NAMES[at]})
    if refused:
        worst = int(np.argmax(counts))
        statistic = STATISTICS[worst]
        values = window[:, worst]
        step = int(np.flatnonzero((values < statistic.minimum) | (values > statistic.maximum))[0])
        total, columns = int(counts.sum()), int((counts > 0).sum())
        in_columns = f"{columns} column" if columns == 1 else f"{columns} columns"
        raise InvalidArgument(
            f"window breaks the probe data contract (docs/data-contract.md): {statistic.name} "
            f"(feature {worst}) is {float(values[step]):g} at step {step}, valid range "
            f"{statistic.range_text()}, and out of range in {int(counts[worst])} of {steps} minutes; "
            f"{total} values in {in_columns} are out of contract (a window is refused when one "
            f"column is out of range in more than {WINDOW_RULE.max_minutes_per_column} minutes, "
            f"or over {WINDOW_RULE.max_share:.0%} of its values are)",
            field="window.packed_values",
            reason="OUT_OF_CONTRACT",
        )
