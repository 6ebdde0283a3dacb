"""Warm-up times the candidate graphs as each batch size serves and puts every device on the faster one per size."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from faultprint.server.model.runner import call_together, median_times, time_graphs, warm_alike


class RecordingRunner:
    """Stands in for a runner: records the graph each size is put on."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.uses: dict[int, bool] = {}
        self.logged: list[tuple[dict[int, float], list[str]]] = []

    def use(self, size: int, xla: bool) -> None:
        self.uses[size] = xla

    def uses_xla(self, size: int) -> bool:
        return self.uses[size]

    def log_warmed(self, seconds: dict[int, float], devices: list[str]) -> None:
        self.logged.append((dict(seconds), list(devices)))


def test_every_runner_runs_the_graph_with_the_lower_time_at_each_size() -> None:
    runners = [RecordingRunner("/device:CPU:0"), RecordingRunner("/device:CPU:1")]
    timed = {1: {True: 0.013, False: 0.020}, 32: {True: 0.300, False: 0.260}, 64: {False: 0.5}}
    seconds = warm_alike(runners, timed)  # type: ignore[arg-type]
    assert [r.uses for r in runners] == [{1: True, 32: False, 64: False}] * 2
    # The scheduler's first estimate per size: the time of the chosen graph.
    assert seconds == {1: 0.013, 32: 0.260, 64: 0.5}
    # One line names every device and the sizes' times.
    assert runners[0].logged == [(seconds, ["/device:CPU:0", "/device:CPU:1"])] and not runners[1].logged


class FakeClock:
    """A clock that only moves when a timed call runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed_calls(clock: FakeClock, costs: dict[bool, list[float]]) -> tuple[dict[bool, Any], dict[bool, int]]:
    """Calls that advance the clock by their next cost in turn; and how often each ran."""
    runs = dict.fromkeys(costs, 0)

    def call(key: bool) -> None:
        clock.now += costs[key][runs[key] % len(costs[key])]
        runs[key] += 1

    return {key: (lambda key=key: call(key)) for key in costs}, runs


def test_candidates_take_turns_and_the_median_decides() -> None:
    clock = FakeClock()
    # The plain graph had one lucky run, faster than any of XLA's; XLA is faster as a rule.
    calls, runs = timed_calls(clock, {False: [0.020, 0.012, 0.021], True: [0.013, 0.014, 0.013]})
    timed = median_times(calls, clock, min_rounds=3, max_rounds=3, budget_s=0.0)
    assert runs == {False: 3, True: 3}
    assert timed == {False: pytest.approx(0.020), True: pytest.approx(0.013)}


def test_cheap_sizes_get_more_rounds_until_the_budget_is_spent() -> None:
    clock = FakeClock()
    calls, runs = timed_calls(clock, {False: [1 / 64], True: [1 / 64]})  # 1/32 s a round
    median_times(calls, clock, min_rounds=3, max_rounds=12, budget_s=5 / 32)
    assert runs == {False: 5, True: 5}  # the fifth round ends on the budget


def test_rounds_stop_at_the_most_or_after_the_fewest() -> None:
    clock = FakeClock()
    calls, runs = timed_calls(clock, {False: [0.001], True: [0.001]})
    median_times(calls, clock, min_rounds=3, max_rounds=12, budget_s=10.0)
    assert runs == {False: 12, True: 12}
    clock = FakeClock()
    calls, runs = timed_calls(clock, {False: [0.3], True: [0.4]})  # one round outspends the budget
    median_times(calls, clock, min_rounds=3, max_rounds=12, budget_s=0.1)
    assert runs == {False: 3, True: 3}


class TimedRunner:
    """Stands in for a prepared runner: each graph call records its device, size and thread."""

    def __init__(self, device: str, calls: list[tuple[str, int, bool, str]]) -> None:
        self.device = device
        self.calls = calls

    def candidates(self, only: bool | None = None) -> tuple[bool, ...]:
        return (only,) if only is not None else (False, True)

    def graph_call(self, size: int, xla: bool) -> Any:
        def call() -> None:
            self.calls.append((self.device, size, xla, threading.current_thread().name))

        return call


def test_a_lone_request_is_timed_alone_and_larger_batches_on_every_device_at_once() -> None:
    calls: list[tuple[str, int, bool, str]] = []
    runners = [TimedRunner("cpu0", calls), TimedRunner("cpu1", calls), TimedRunner("cpu2", calls)]
    with ThreadPoolExecutor(1, "helper-1") as one, ThreadPoolExecutor(1, "helper-2") as two:
        timed = time_graphs(runners, 1, None, [one, two])  # type: ignore[arg-type]
        assert set(timed) == {False, True}
        assert {(device, size) for device, size, _, _ in calls} == {("cpu0", 1)}
        calls.clear()
        time_graphs(runners, 8, True, [one, two])  # type: ignore[arg-type]
    # Only the kept graph, on every device, each on its own thread, every round.
    assert {xla for _, _, xla, _ in calls} == {True}
    on = {device: {thread for d, _, _, thread in calls if d == device} for device in ("cpu0", "cpu1", "cpu2")}
    assert on == {"cpu0": {threading.current_thread().name}, "cpu1": {"helper-1_0"}, "cpu2": {"helper-2_0"}}
    assert len(calls) % 3 == 0 and len(calls) >= 9  # three devices a round, at least three rounds


def test_calls_together_run_at_once_and_all_finish_before_it_returns() -> None:
    barrier = threading.Barrier(3, timeout=5)  # breaks unless all three calls wait at once
    finished: list[int] = []

    def call(n: int) -> Any:
        return lambda: (barrier.wait(), finished.append(n))

    with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(1) as two:
        call_together([call(0), call(1), call(2)], [one, two])
        assert sorted(finished) == [0, 1, 2]
        with pytest.raises(ValueError, match="need 2 helpers, got 1"):
            call_together([call(0), call(1), call(2)], [one])
