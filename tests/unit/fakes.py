"""Fakes for unit tests of pure logic."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when a test sets or advances ``now`` (seconds)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
