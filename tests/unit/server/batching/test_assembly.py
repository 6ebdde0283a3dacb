"""Batch buffers and how a batch reaches a CPU encoder: aligned, and read in place."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.server.batching.assembly import (
    TENSOR_ALIGNMENT,
    BatchBuffers,
    aligned_zeros,
    assemble,
    is_aligned,
    split,
)
from faultprint.server.model.runner import encoder_input


def test_batch_buffers_are_aligned_as_tensors_are_and_reused() -> None:
    buffers = BatchBuffers(max_batch_size=8)
    first = buffers.acquire((60, 132))
    assert first.shape == (8, 60, 132) and first.dtype == np.float32
    assert first.ctypes.data % TENSOR_ALIGNMENT == 0 and first.flags.c_contiguous
    buffers.release(first)
    assert buffers.acquire((60, 132)) is first
    assert is_aligned(aligned_zeros((3, 5, 7)))


def test_assembled_rows_come_back_split_by_request() -> None:
    windows = [np.full((2, 3), i, np.float32) for i in range(3)]
    batch = assemble(windows, padded_size=4, out=aligned_zeros((8, 2, 3)))
    assert batch.shape == (4, 2, 3) and is_aligned(batch)
    assert [row[0, 0] for row in split(batch, 3)] == [0, 1, 2]


def test_a_cpu_encoder_reads_an_aligned_batch_in_place() -> None:
    batch = aligned_zeros((4, 2, 3))
    tensor = encoder_input(batch, "/device:CPU:0")
    batch[1, 1, 1] = 7.0  # the tensor is the batch's memory, not a copy of it
    assert float(tensor[1, 1, 1]) == 7.0


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@pytest.mark.parametrize(
    "batch",
    [
        np.zeros((4, 2, 3), np.float64),  # not float32
        aligned_zeros((4, 2, 6))[:, :, ::2],  # not contiguous
        aligned_zeros((4 * 2 * 3 + 1,))[1:].reshape(4, 2, 3),  # not aligned
        _read_only(aligned_zeros((4, 2, 3))),  # such as a view of a request's bytes
    ],
)
def test_anything_else_goes_in_as_given(batch: np.ndarray) -> None:
    assert encoder_input(batch, "/device:CPU:0") is batch


def test_a_gpu_batch_goes_in_as_given_for_the_copy_to_the_device() -> None:
    batch = aligned_zeros((4, 2, 3))
    assert encoder_input(batch, "/device:GPU:0") is batch
