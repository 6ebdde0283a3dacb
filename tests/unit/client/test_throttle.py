"""Client-side adaptive throttling on a fake clock."""

from __future__ import annotations

import itertools

import grpc
import pytest

from faultprint.client.throttle import AdaptiveThrottle, ThrottleOptions, throttled_error
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


def _overload_seconds(throttle: AdaptiveThrottle, clock: Clock, seconds: int, offered: int,
                      capacity: int) -> list[tuple[int, int]]:  # fmt: skip
    """(sent, accepted) per second while a client offers `offered` calls a second to a
    server that accepts the first `capacity` of each second and refuses the rest."""
    start, per_second = clock.now, []
    for second in range(seconds):
        sent = accepted = 0
        for i in range(offered):
            clock.now = start + second + i / offered
            if throttle.admit():
                sent += 1
                accepted += sent <= capacity
                throttle.record(sent <= capacity)
        per_second.append((sent, accepted))
    return per_second


def test_twice_the_capacity_reaches_the_server_as_little_more_than_its_capacity() -> None:
    """The default ratio: under 2x overload the server receives ~1.1x what it can take, so
    its refusals cost little, while it still gets enough to stay fully busy."""
    clock = Clock()
    steady = _overload_seconds(AdaptiveThrottle(ThrottleOptions(), clock, seed=4), clock, 60, 200, 100)[10:]
    assert max(sent for sent, _ in steady) <= 130
    assert sum(accepted for _, accepted in steady) >= 0.97 * 100 * len(steady)
    # The SRE book's ratio of 2 lets the whole overload through to this server.
    clock = Clock()
    loose = _overload_seconds(
        AdaptiveThrottle(ThrottleOptions(ratio=2.0), clock, seed=4), clock, 60, 200, 100
    )
    assert min(sent for sent, _ in loose[10:]) == 200


def test_after_an_outage_sending_ramps_back_up_to_the_whole_demand() -> None:
    """A 2 s outage, then a server that takes everything: sending stays low while the
    outage is in the window, then fades up to half the demand step by step rather than
    jumping to all of it, and grows from there with the accepts to the whole demand."""
    for seed in (5, 6, 7):
        clock = Clock()
        throttle = AdaptiveThrottle(ThrottleOptions(window_s=10.0), clock, seed=seed)
        _overload_seconds(throttle, clock, 2, 200, 0)
        sent = [s for s, _ in _overload_seconds(throttle, clock, 90, 200, 200)]
        assert max(sent[:7]) < 20
        assert all(b - a <= 70 for a, b in itertools.pairwise(sent))
        assert min(sent[13:20]) >= 70
        assert sent[70:] == [200] * 20
        assert throttle.refusal_probability() == 0.0


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
