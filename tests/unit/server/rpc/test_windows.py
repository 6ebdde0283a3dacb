"""Window decoding and validation against the model's input spec and the probe data contract."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.client.client import encode_window
from faultprint.server.rpc.errors import InvalidArgument
from faultprint.server.rpc.windows import decode_window
from faultprint.traffic.catalogue import FEATURE_INDEX
from faultprint.traffic.contract import LOWER, WINDOW_RULE, count_out_of_contract
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


class RecordingCounter:
    """Stands in for faultprint.window.values_out_of_contract: what was added, by attributes."""

    def __init__(self) -> None:
        self.added: dict[tuple[str, str], int] = {}

    def add(self, amount: int, attributes: dict[str, str]) -> None:
        key = (attributes["column"], attributes["outcome"])
        self.added[key] = self.added.get(key, 0) + amount


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> RecordingCounter:
    from faultprint.server import telemetry

    recording = RecordingCounter()
    monkeypatch.setattr(telemetry, "values_out_of_contract", recording)
    return recording


def contract_window() -> np.ndarray:
    """A window within the data contract: a simulated normal hour."""
    from faultprint.traffic.simulator import PROFILES, simulate_windows

    return simulate_windows(PROFILES["metro-eu"], ["normal"], 1, seed=4)[0][0]


def test_a_window_within_the_contract_is_served_and_counts_nothing(counter: RecordingCounter) -> None:
    values = contract_window()
    assert np.array_equal(decode_window(encode_window(values), 60, 129), values)
    values[:, FEATURE_INDEX["lat_bye_to_200_mean_ms"]] = -0.0  # -0.0 >= 0: its sign bit is no violation
    values[:, FEATURE_INDEX["kpi_answer_seizure_ratio"]] = 1.0  # the bounds are inclusive
    decode_window(encode_window(values), 60, 129)
    assert counter.added == {}


def test_a_ratio_in_percent_is_refused_naming_the_column_its_value_and_its_range(
    counter: RecordingCounter,
) -> None:
    values = contract_window()
    ratio = FEATURE_INDEX["kpi_registration_success_rate"]
    values[:, ratio] = 99.5
    values[3, FEATURE_INDEX["gauge_active_dialogs"]] = -1.0
    with pytest.raises(InvalidArgument) as refused:
        decode_window(encode_window(values), 60, 129)
    message = str(refused.value)
    assert "kpi_registration_success_rate (feature 122) is 99.5 at step 0" in message
    assert "valid range [0, 1] (ratio), and out of range in 60 of 60 minutes" in message
    assert "61 values in 2 columns are out of contract" in message and "docs/data-contract.md" in message
    assert counter.added == {
        ("kpi_registration_success_rate", "refused"): 60, ("gauge_active_dialogs", "refused"): 1,
    }  # fmt: skip


def test_a_few_values_out_of_contract_are_served_and_counted_by_column(counter: RecordingCounter) -> None:
    values = contract_window()
    values[[4, 9], FEATURE_INDEX["kpi_answer_seizure_ratio"]] = 1.2
    values[7, FEATURE_INDEX["req_bye"]] = -4000.0  # an unrepaired counter reset
    assert np.array_equal(decode_window(encode_window(values), 60, 129), values)
    assert counter.added == {("kpi_answer_seizure_ratio", "served"): 2, ("req_bye", "served"): 1}


def test_the_fast_check_agrees_with_the_contract_on_random_damage(counter: RecordingCounter) -> None:
    """The bit-level check and the slow path decide as count_out_of_contract and WindowRule do."""
    assert (LOWER == 0).all()  # the check compares float32 bits, which order values >= 0 only
    rng = np.random.default_rng(11)
    base = contract_window()
    specials = np.array([-1.0, -1e-30, 1.0000001, 2.0, 7e5, 1e8, 9e6], np.float32)
    for trial in range(200):
        values = base.copy()
        hits = rng.integers(0, 12)
        values[rng.integers(0, 60, hits), rng.integers(0, 129, hits)] = rng.choice(specials, hits)
        if trial % 4 == 0:
            values[:, rng.integers(0, 129)] *= 1e3  # a whole column in other units
        counts = count_out_of_contract(values, "windows")
        before = sum(counter.added.values())
        if WINDOW_RULE.unusable(counts, 60):
            with pytest.raises(InvalidArgument, match="breaks the probe data contract"):
                decode_window(encode_window(values), 60, 129)
        else:
            decode_window(encode_window(values), 60, 129)
        assert sum(counter.added.values()) - before == counts.sum()


def test_a_model_of_another_catalogue_is_not_held_to_the_contract(counter: RecordingCounter) -> None:
    values = np.full((60, 4), 250.0, np.float32)  # 4 features: not the catalogue's columns
    assert np.array_equal(decode_window(encode_window(values), 60, 4), values)
    values[1, 2] = np.nan
    with pytest.raises(InvalidArgument, match="step 1, feature 2"):
        decode_window(encode_window(values), 60, 4)
    assert counter.added == {}
