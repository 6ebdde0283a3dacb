"""Rejection log lines under overload are throttled per RPC and code, never lost from the count."""

from faultprint.server.rpc.unary import LogThrottle
from tests.unit.fakes import FakeClock


def test_first_line_passes_then_the_rest_of_the_interval_is_held_and_counted() -> None:
    clock = FakeClock()
    throttle = LogThrottle(interval_s=1.0, clock=clock)
    assert throttle.admit("k") == 0
    assert [throttle.admit("k") for _ in range(5)] == [None] * 5
    clock.now += 1.0
    assert throttle.admit("k") == 5
    assert throttle.admit("k") is None


def test_keys_are_throttled_independently() -> None:
    clock = FakeClock()
    throttle = LogThrottle(interval_s=1.0, clock=clock)
    assert throttle.admit(("ClassifyWindow", "RESOURCE_EXHAUSTED")) == 0
    assert throttle.admit(("ClassifyWindow", "DEADLINE_EXCEEDED")) == 0
    assert throttle.admit(("ClassifyWindow", "RESOURCE_EXHAUSTED")) is None
