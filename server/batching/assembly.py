"""Batch assembly: copies windows into a reusable batch buffer and splits encoder output by request.

Each window arrives as a zero-copy ``np.frombuffer`` view of its request's bytes; the
one copy a window ever gets is the ``np.stack`` into a batch buffer that is reused
batch after batch, so the hot path allocates no batch-sized arrays. The buffers are
aligned as TensorFlow aligns its own tensors, so a CPU encoder reads a batch in place
(model_runner.py) instead of copying it again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def assemble(windows: Sequence[np.ndarray], padded_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """One (padded_size, steps, features) float32 array holding windows in its first rows.

    With out (a buffer of at least padded_size rows), rows past len(windows) keep
    whatever an earlier batch left there: encoder rows are independent at inference,
    and padding rows' outputs are dropped by split(). Without out, padding is zeros.
    """
    if not windows:
        raise ValueError("cannot assemble an empty batch")
    if len(windows) > padded_size:
        raise ValueError(f"{len(windows)} windows do not fit a batch of {padded_size}")
    if out is None:
        out = np.zeros((padded_size, *windows[0].shape), dtype=np.float32)
    batch = out[:padded_size]
    np.stack(windows, out=batch[: len(windows)])
    return batch


def split(outputs: np.ndarray, count: int) -> list[np.ndarray]:
    """The first count rows of the encoder output, one per request; padding rows are dropped."""
    if outputs.shape[0] < count:
        raise ValueError(f"encoder returned {outputs.shape[0]} rows for {count} requests")
    return list(outputs[:count])


class BatchBuffers:
    """Reusable (max_batch_size, steps, features) buffers, one per batch in flight on a device."""

    def __init__(self, max_batch_size: int) -> None:
        self._rows = max_batch_size
        self._free: list[np.ndarray] = []

    def acquire(self, window_shape: tuple[int, ...]) -> np.ndarray:
        while self._free:
            buffer = self._free.pop()
            if buffer.shape[1:] == window_shape:
                return buffer
        return aligned_zeros((self._rows, *window_shape))

    def release(self, buffer: np.ndarray) -> None:
        self._free.append(buffer)


# TensorFlow's tensor alignment (Eigen's largest, for AVX-512), in bytes.
TENSOR_ALIGNMENT = 64


def aligned_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of zeros whose data starts on a TENSOR_ALIGNMENT boundary."""
    size = int(np.prod(shape)) * 4
    raw = np.zeros(size + TENSOR_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[start : start + size].view(np.float32).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    return array.ctypes.data % TENSOR_ALIGNMENT == 0
