"""The wrapper every unary RPC handler goes through: a span, latency and deadline metrics, error mapping."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from faultprint.server.rpc.errors import status_for
from faultprint.server.rpc.requests import Undecodable
from faultprint.server.telemetry import ServerTelemetry

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def unary_rpc(name: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Wraps a servicer method; domain errors become the status errors.status_for gives."""

    method = {"rpc.method": name}

    def wrap(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            telemetry: ServerTelemetry = self.telemetry
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            arrival_left_s = context.time_remaining()
            if arrival_left_s is not None:
                telemetry.rpc_deadline_on_arrival_ms.record(arrival_left_s * 1000, method)
            with telemetry.tracer.start_as_current_span(f"faultprint.v1/{name}") as span:
                try:
                    if isinstance(request, Undecodable):
                        raise request.error()
                    response = await handler(self, request, context)
                    left_s = context.time_remaining()
                    if left_s is not None:
                        telemetry.rpc_deadline_left_ms.record(left_s * 1000, method)
                    return response
                except Exception as exc:
                    code, message = status_for(exc)
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    log_error(name, code, message, exc)
                    await context.abort(code, message)
                    raise  # unreachable: abort raises
                finally:
                    telemetry.rpc_latency_ms.record(
                        (time.perf_counter() - started) * 1000,
                        {"rpc.method": name, "rpc.grpc.status": code.name},
                    )

        return wrapper

    return wrap


# Load shedding answers these by the thousand per second under overload; their log
# lines are throttled so that logging does not take the CPU the batcher needs.
SHEDDING_CODES = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class LogThrottle:
    """Lets one line per key through each interval and counts the ones it holds back."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._next: dict[object, float] = {}
        self._held: dict[object, int] = {}

    def admit(self, key: object) -> int | None:
        """None to hold this line back; otherwise how many were held back since the last one."""
        now = self.clock()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval_s
        return self._held.pop(key, 0)


_throttle = LogThrottle()


def log_error(name: str, code: grpc.StatusCode, message: str, exc: BaseException) -> None:
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s failed: %s", name, message, exc_info=exc)
        return
    if code not in SHEDDING_CODES:
        log.info("%s -> %s: %s", name, code.name, message)
        return
    held = _throttle.admit((name, code))
    if held is not None:
        log.info("%s -> %s: %s (%d more like it since the last line)", name, code.name, message, held)
