"""Batch assembly: stacks single windows into one padded array and splits encoder output by request."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def assemble(windows: Sequence[np.ndarray], padded_size: int) -> np.ndarray:
    """One (padded_size, steps, features) float32 array; rows past len(windows) are zeros."""
    if not windows:
        raise ValueError("cannot assemble an empty batch")
    if len(windows) > padded_size:
        raise ValueError(f"{len(windows)} windows do not fit a batch of {padded_size}")
    batch = np.zeros((padded_size, *windows[0].shape), dtype=np.float32)
    np.stack(windows, out=batch[: len(windows)])
    return batch


def split(outputs: np.ndarray, count: int) -> list[np.ndarray]:
    """The first count rows of the encoder output, one per request; padding rows are dropped."""
    if outputs.shape[0] < count:
        raise ValueError(f"encoder returned {outputs.shape[0]} rows for {count} requests")
    return list(outputs[:count])
