"""Decoding and validation of windows: packed float32 bytes to numpy, with no per-value Python work."""

from __future__ import annotations

import numpy as np

from faultprint.server.rpc.errors import InvalidArgument
from faultprint.v1 import window_pb2

_LE_FLOAT32 = np.dtype("<f4")


def decode_window(window: window_pb2.Window, steps: int, features: int) -> np.ndarray:
    """The window as a (steps, features) float32 array, checked against the model's input spec."""
    if window.steps != steps or window.features != features:
        raise InvalidArgument(
            f"window shape is ({window.steps} steps, {window.features} features), "
            f"model expects ({steps} steps, {features} features)"
        )
    expected = steps * features
    # Each read of a bytes field builds a new bytes object: read it once.
    packed = window.packed_values
    if packed and len(window.values):
        raise InvalidArgument(
            "window sets both packed_values and values; set exactly one (packed_values is the fast path)"
        )
    if packed:
        if len(packed) != expected * 4:
            raise InvalidArgument(
                f"packed_values has {len(packed)} bytes, expected {expected * 4} "
                f"({steps} x {features} little-endian float32)"
            )
        values = np.frombuffer(packed, dtype=_LE_FLOAT32)
    elif len(window.values):
        if len(window.values) != expected:
            raise InvalidArgument(
                f"values has {len(window.values)} floats, expected {expected} ({steps} x {features})"
            )
        values = np.asarray(window.values, dtype=np.float32)
    else:
        raise InvalidArgument("window is empty: set packed_values (or values)")
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InvalidArgument(
            f"window has a non-finite value (NaN or Inf) at step {bad // features}, "
            f"feature {bad % features}; every value must be finite"
        )
    return values.reshape(steps, features)
