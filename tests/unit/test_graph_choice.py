"""Warm-up puts every device of a server on the same graph per batch size: the fastest over all their timings."""

from __future__ import annotations

from typing import Any

from server.model_runner import fastest_graph, warm_alike


class RecordingRunner:
    """Stands in for a runner: records the graph each size is put on."""

    def __init__(self) -> None:
        self.uses: dict[int, bool] = {}
        self.logged: dict[int, float] = {}

    def use(self, size: int, xla: bool) -> None:
        self.uses[size] = xla

    def uses_xla(self, size: int) -> bool:
        return self.uses[size]

    def log_warmed(self, seconds: dict[int, float]) -> None:
        self.logged = dict(seconds)


def test_the_best_time_on_any_device_decides() -> None:
    # Device 1's XLA reading was disturbed (another device warming beside it); device 0's was not.
    assert fastest_graph([{True: 0.017, False: 0.030}, {True: 0.034, False: 0.031}]) is True
    assert fastest_graph([{True: 0.020, False: 0.012}, {True: 0.011, False: 0.040}]) is True
    assert fastest_graph([{True: 0.020, False: 0.012}, {True: 0.013, False: 0.040}]) is False


def test_a_single_candidate_is_chosen() -> None:
    assert fastest_graph([{False: 0.5}, {False: 0.4}]) is False
    assert fastest_graph([{True: 0.5}]) is True


def test_every_runner_runs_the_chosen_graph_and_the_estimate_is_the_slowest_device() -> None:
    runners = [RecordingRunner(), RecordingRunner()]
    timed: list[Any] = [
        {1: {True: 0.017, False: 0.030}, 32: {True: 0.300, False: 0.260}},
        {1: {True: 0.034, False: 0.031}, 32: {True: 0.290, False: 0.280}},
    ]
    seconds = warm_alike(runners, timed)  # type: ignore[arg-type]
    assert [r.uses for r in runners] == [{1: True, 32: False}] * 2
    # The scheduler's estimate per size: the slower device on the chosen graph.
    assert seconds == {1: 0.034, 32: 0.280}
    # Each device logs its own time on the graph it runs.
    assert runners[0].logged == {1: 0.017, 32: 0.260} and runners[1].logged == {1: 0.034, 32: 0.280}
