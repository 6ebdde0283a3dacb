"""Which generator a load point goes to, and the windows file the native one reads (no server)."""

from __future__ import annotations

import argparse
import struct

import numpy as np
import pytest

from benchmarks.load_generator import pack_windows, uses_native
from faultprint.client import encode_window
from faultprint.v1 import window_pb2


def point(**overrides: object) -> argparse.Namespace:
    flags: dict[str, object] = {"rate": 0.0, "record": None, "throttle_ratio": 0.0, "generator": None}
    return argparse.Namespace(**(flags | overrides))


def test_closed_loops_go_to_the_native_generator_unless_told_otherwise() -> None:
    assert uses_native(point())
    assert uses_native(point(generator="native"))
    assert not uses_native(point(generator="python"))


@pytest.mark.parametrize("flag", [{"rate": 100.0}, {"record": "calls.json"}, {"throttle_ratio": 1.1}])
def test_open_loops_recording_and_throttling_stay_in_python(flag: dict[str, object]) -> None:
    assert not uses_native(point(**flag))
    with pytest.raises(ValueError, match="needs --generator python"):
        uses_native(point(generator="native", **flag))


def test_packed_windows_read_back_one_by_one_after_their_lengths() -> None:
    arrays = [np.full((3, 2), i, dtype=np.float32) for i in range(3)]
    packed = pack_windows([encode_window(a) for a in arrays])
    read: list[window_pb2.Window] = []
    offset = 0
    while offset < len(packed):
        (size,) = struct.unpack_from("<I", packed, offset)
        read.append(window_pb2.Window.FromString(packed[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    assert offset == len(packed)
    assert [(w.steps, w.features) for w in read] == [(3, 2)] * 3
    for window, array in zip(read, arrays, strict=True):
        assert np.array_equal(np.frombuffer(window.packed_values, "<f4").reshape(3, 2), array)
