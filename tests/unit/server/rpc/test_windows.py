"""Window decoding and validation against the model's input spec."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.client.client import encode_window
from faultprint.server.rpc.errors import InvalidArgument
from faultprint.server.rpc.windows import decode_window
from faultprint.v1 import window_pb2


def test_packed_round_trip_is_exact() -> None:
    values = np.random.default_rng(0).random((60, 129), dtype=np.float32)
    assert np.array_equal(decode_window(encode_window(values), 60, 129), values)


def test_plain_float_values_are_accepted() -> None:
    window = window_pb2.Window(steps=2, features=3, values=[1, 2, 3, 4, 5, 6])
    assert decode_window(window, 2, 3).tolist() == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (window_pb2.Window(steps=59, features=129), r"\(59 steps, 129 features\), model expects \(60 steps"),
        (window_pb2.Window(steps=60, features=129, packed_values=b"\0" * 12), "has 12 bytes, expected 30960"),
        (window_pb2.Window(steps=60, features=129, values=[1.0] * 7), "has 7 floats, expected 7740"),
        (window_pb2.Window(steps=60, features=129), "window is empty"),
    ],
)
def test_bad_windows_say_what_was_wrong_and_what_was_expected(
    window: window_pb2.Window, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_window(window, 60, 129)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_with_their_position(bad: float) -> None:
    values = np.zeros((60, 129), np.float32)
    values[3, 7] = bad
    with pytest.raises(InvalidArgument, match="step 3, feature 7"):
        decode_window(encode_window(values), 60, 129)
