"""Client-side adaptive throttling: a probe stops sending what an overloaded server would refuse.

The technique of Google's SRE book ("Handling Overload"): each client counts, over the
last window_s seconds, the requests it made and those the server accepted. While the
server accepts nearly everything, nothing changes. Once requests exceed ratio x
accepts, each new request is refused locally with probability
(requests - ratio x accepts) / (requests + 1), without reaching the network. Throttling
arms when the server refuses something, so a probe that has just started, with no
answers yet, sends its first burst; it disarms only once requests fit within ratio x
accepts again, so sending ramps back up after an overload instead of jumping to the
whole demand: after a window without refusals, up to half the demand within a few
seconds, and from there as accepts grow.

A fleet of probes therefore backs off by itself when the servers shed load. The server
no longer spends CPU refusing windows it cannot serve, and the windows it does receive
arrive with their deadline still ahead of them. A refusal by the server (RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED, UNAVAILABLE) counts as not accepted; any other answer, error or not,
means the server had room for the request.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

# Status codes that say the server had no room for a request.
OVERLOAD_CODES = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
)
OVERLOAD_CODE_VALUES = frozenset(code.value[0] for code in OVERLOAD_CODES)

# Factor the refusal probability's ceiling falls by each second once the server has
# gone a whole window without refusing anything, down to RAMP_FLOOR.
RAMP_PER_QUIET_S = 0.75
# The fade alone never sends more than half the demand; beyond that, sending grows only
# as accepts do. Under twice the server's capacity, half the demand is that capacity, so
# the fade probes up to it and not past it (a fade to 0 overshot and timed calls out).
RAMP_FLOOR = 0.5


@dataclass(frozen=True)
class ThrottleOptions:
    """How far requests may run ahead of what the server accepts."""

    # Requests allowed per accepted request before local refusals start (the SRE book's K;
    # lower is more aggressive). The book's 2 suits servers whose refusals are cheap; a
    # faultprint refusal costs about as much gRPC and Python work as an answer, so under
    # 2x overload a ratio of 2 lets the whole overload through and calls time out queued
    # in gRPC (benchmarks/archive/2026-11-21.md). At 1.1 the server gets ~1.1x what it takes.
    ratio: float = 1.1
    # Seconds of history the counts cover.
    window_s: float = 10.0

    def __post_init__(self) -> None:
        if self.ratio < 1.0 or self.window_s <= 0:
            raise ValueError(
                f"throttle ratio must be >= 1 and window_s > 0, got {self.ratio}, {self.window_s}"
            )


class AdaptiveThrottle:
    """Request and accept counts over a sliding window of one-second buckets."""

    def __init__(self, options: ThrottleOptions, clock: Callable[[], float] = time.monotonic,
                 seed: int | None = None) -> None:  # fmt: skip
        self.options = options
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        # [second, requests, accepts, rejects], oldest first.
        self._buckets: deque[list[int]] = deque()
        self.requests = 0
        self.accepts = 0
        # Requests the server refused (overload), in the window.
        self.rejects = 0
        # Requests refused locally, since the start.
        self.refused = 0
        # Whether the server has refused something since demand last fit its accepts.
        self._armed = False
        # The whole second of the server's latest refusal.
        self._last_refusal_s = -(2**62)

    def _bucket(self) -> list[int]:
        now = int(self._clock())
        while self._buckets and self._buckets[0][0] <= now - self.options.window_s:
            _, requests, accepts, rejects = self._buckets.popleft()
            self.requests -= requests
            self.accepts -= accepts
            self.rejects -= rejects
        if not self._buckets or self._buckets[-1][0] != now:
            self._buckets.append([now, 0, 0, 0])
        return self._buckets[-1]

    def refusal_probability(self) -> float:
        self._bucket()
        excess = self.requests - self.options.ratio * self.accepts
        # Armed by a refusal; disarmed only once demand no longer outruns ratio x accepts,
        # not when the last refusal leaves the window: while local refusals hold the load
        # just under what the server takes, the server refuses nothing, and disarming then
        # would let the whole excess through at once.
        if self.rejects:
            self._armed = True
        if excess <= 0:
            self._armed = False
        if not self._armed:
            return 0.0
        return min(excess / (self.requests + 1), self._ceiling())

    def _ceiling(self) -> float:
        """The most the refusal probability may be: 1 until the server has gone a whole
        window without refusing anything, then RAMP_PER_QUIET_S times less each second,
        down to RAMP_FLOOR. After an outage, with almost no accepts, sending otherwise
        grows only as fast as accepts at the ratio let it, which from nothing takes minutes."""
        quiet_s = int(self._clock()) - self._last_refusal_s - int(self.options.window_s)
        return max(RAMP_FLOOR, RAMP_PER_QUIET_S ** max(0, quiet_s))

    def admit(self) -> bool:
        """Counts a request and says whether it may be sent."""
        p = self.refusal_probability()
        self._bucket()[1] += 1
        self.requests += 1
        if p > 0 and self._rng.random() < p:
            self.refused += 1
            return False
        return True

    def record(self, accepted: bool) -> None:
        """Counts the server's answer to a request that was sent."""
        if accepted:
            self._bucket()[2] += 1
            self.accepts += 1
        else:
            self._bucket()[3] += 1
            self.rejects += 1
            self._last_refusal_s = int(self._clock())

    def record_status(self, code: grpc.StatusCode) -> None:
        self.record(code not in OVERLOAD_CODES)


def throttled_error() -> grpc.aio.AioRpcError:
    """The error a locally refused call raises: RESOURCE_EXHAUSTED, as the server would say."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=THROTTLED_DETAILS,
    )


THROTTLED_DETAILS = "refused by the client's adaptive throttling: the server is shedding load"
