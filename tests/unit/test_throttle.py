"""Client-side adaptive throttling on a fake clock."""

from __future__ import annotations

import grpc
import pytest

from client.throttle import AdaptiveThrottle, ThrottleOptions, throttled_error
from tests.unit.fakes import FakeClock as Clock


def test_a_server_that_accepts_everything_is_never_throttled() -> None:
    throttle = AdaptiveThrottle(ThrottleOptions(ratio=2.0), Clock(), seed=1)
    for _ in range(1000):
        assert throttle.admit()
        throttle.record(True)
    assert throttle.refused == 0


def test_a_fresh_client_sends_its_first_burst_before_any_answer() -> None:
    throttle = AdaptiveThrottle(ThrottleOptions(ratio=2.0), Clock(), seed=1)
    assert all(throttle.admit() for _ in range(100))


def test_refusals_start_once_requests_outrun_twice_the_accepts() -> None:
    throttle = AdaptiveThrottle(ThrottleOptions(ratio=2.0), Clock(), seed=1)
    for i in range(1000):  # the server accepts one request in four
        if throttle.admit():
            throttle.record(i % 4 == 0)
    assert throttle.refused > 0
    # Requests sent settle near ratio x accepts: the excess is refused locally.
    assert throttle.refusal_probability() == pytest.approx(
        (throttle.requests - 2.0 * throttle.accepts) / (throttle.requests + 1)
    )
    sent = throttle.requests - throttle.refused
    assert sent < 0.75 * throttle.requests


def test_a_server_refusing_everything_is_almost_never_called() -> None:
    throttle = AdaptiveThrottle(ThrottleOptions(ratio=2.0), Clock(), seed=2)
    sent = 0
    for _ in range(10_000):
        if throttle.admit():
            sent += 1
            throttle.record_status(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert sent < 50


def test_history_older_than_the_window_is_forgotten() -> None:
    clock = Clock()
    throttle = AdaptiveThrottle(ThrottleOptions(ratio=2.0, window_s=10.0), clock, seed=3)
    for _ in range(500):
        if throttle.admit():
            throttle.record(False)
    assert throttle.refusal_probability() > 0.9
    clock.now += 11.0
    assert throttle.refusal_probability() == 0.0
    assert (throttle.requests, throttle.accepts) == (0, 0)


def test_only_overload_statuses_count_as_refusals() -> None:
    throttle = AdaptiveThrottle(ThrottleOptions(), Clock())
    for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK):
        throttle.admit()
        throttle.record_status(code)
    for code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.UNAVAILABLE):  # fmt: skip
        throttle.admit()
        throttle.record_status(code)
    assert (throttle.requests, throttle.accepts) == (6, 3)


def test_a_locally_refused_call_looks_like_the_servers_refusal() -> None:
    error = throttled_error()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "adaptive throttling" in error.details()
    with pytest.raises(ValueError):
        ThrottleOptions(ratio=0.5)
