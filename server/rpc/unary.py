"""The wrapper every unary RPC handler goes through: a span, latency and deadline metrics, error mapping."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from faultprint.server.rpc.errors import rich_status, status_for
from faultprint.server.rpc.requests import Undecodable
from faultprint.server.telemetry import ServerTelemetry

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def unary_rpc(name: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Wraps a servicer method (of a servicer with a service_name): deadline metrics, its
    duration by status, and domain errors as the status errors.rich_status gives."""

    by_code: dict[grpc.StatusCode, dict[str, str | int]] = {}

    def labels(service: str, code: grpc.StatusCode) -> dict[str, str | int]:
        found = by_code.get(code)
        if found is None:
            found = by_code[code] = {
                "rpc.system": "grpc", "rpc.service": service, "rpc.method": name,
                "rpc.grpc.status_code": code.value[0],
            }  # fmt: skip
        return found

    def wrap(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            telemetry: ServerTelemetry = self.telemetry
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            arrival_left_s = context.time_remaining()
            if arrival_left_s is not None:
                telemetry.rpc_deadline_on_arrival_s.record(arrival_left_s, labels(self.service_name, code))
            try:
                if isinstance(request, Undecodable):
                    raise request.error()
                response = await handler(self, request, context)
                left_s = context.time_remaining()
                if left_s is not None:
                    telemetry.rpc_deadline_left_s.record(left_s, labels(self.service_name, code))
                return response
            except Exception as exc:
                code, _ = status_for(exc)
                await refuse(name, context, exc)
            finally:
                telemetry.rpc_duration_s.record(
                    time.perf_counter() - started, labels(self.service_name, code)
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


async def refuse(
    name: str, context: grpc.aio.ServicerContext, exc: BaseException, note: str = ""
) -> NoReturn:
    """Ends the call with exc's status and its details, and logs it (with note appended)."""
    status = rich_status(exc)
    log_error(name, status.code, status.details + note, exc)
    # abort with the details' trailer is abort_with_status, in the form span instrumentation sees.
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")


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
