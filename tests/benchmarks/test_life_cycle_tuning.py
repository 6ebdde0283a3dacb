"""The life-cycle replay diagnoses each node's minutes as a streaming server would."""

from __future__ import annotations

import numpy as np

from benchmarks.life_cycle_tuning import diagnose_node
from faultprint.server.references.index import CaseEmbeddings, NetworkIndex
from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS
from faultprint.traffic.rows import Rows
from faultprint.traffic.simulator import PROFILES, simulate_windows

START = 29_000_000


class _Model:
    """Embeds every window at the origin: everything matches the normal case."""

    threshold = 1.0

    def embed(self, windows: np.ndarray, baseline: NetworkBaseline) -> np.ndarray:
        return np.zeros((len(windows), 4), np.float32)


def _rows(minutes: int) -> np.ndarray:
    windows = simulate_windows(PROFILES["metro-eu"], ["normal"], minutes // WINDOW_STEPS, seed=3)[0]
    return windows.reshape(-1, NUM_FEATURES).astype(np.float32)


def test_a_node_whose_earlier_hour_fills_its_ring_is_diagnosed_from_its_first_streamed_minute() -> None:
    values = _rows(180)
    baseline = NetworkBaseline.fit(values.reshape(-1, WINDOW_STEPS, NUM_FEATURES))
    index = NetworkIndex([CaseEmbeddings("normal", "normal", np.zeros((1, 4), np.float32))])
    minutes = START + np.arange(len(values))
    streamed = slice(WINDOW_STEPS, None)
    cold = diagnose_node(_Model(), baseline, index, "net", "a", minutes[streamed], values[streamed])  # type: ignore[arg-type]
    assert cold.diagnoses[0].minute == START + 2 * WINDOW_STEPS - 1  # after a full hour of its own
    before = Rows(np.full(WINDOW_STEPS, "a"), np.full(WINDOW_STEPS, "net"), minutes[:WINDOW_STEPS],
                  values[:WINDOW_STEPS].astype(np.float64), None)  # fmt: skip
    warm = diagnose_node(_Model(), baseline, index, "net", "a", minutes[streamed], values[streamed], before)  # type: ignore[arg-type]
    assert [d.minute for d in warm.diagnoses] == minutes[streamed].tolist()
    assert all(d.label == "normal" for d in warm.diagnoses) and len(warm.departures) == len(warm.diagnoses)


def test_a_repeated_minute_is_not_diagnosed_again() -> None:
    values = _rows(120)
    baseline = NetworkBaseline.fit(values.reshape(-1, WINDOW_STEPS, NUM_FEATURES))
    index = NetworkIndex([CaseEmbeddings("normal", "normal", np.zeros((1, 4), np.float32))])
    order = [*range(70), 65, *range(70, 120)]  # minute 65 sent twice
    minutes = START + np.array(order)
    node = diagnose_node(_Model(), baseline, index, "net", "a", minutes, values[order])  # type: ignore[arg-type]
    assert [d.minute for d in node.diagnoses] == list(range(START + 59, START + 120))
