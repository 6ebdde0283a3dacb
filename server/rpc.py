"""The wrapper every unary RPC handler goes through: a span, a latency histogram, and error mapping."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from server.errors import status_for
from server.telemetry import ServerTelemetry

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def unary_rpc(name: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Wraps a servicer method; domain errors become the status errors.status_for gives."""

    def wrap(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            telemetry: ServerTelemetry = self.telemetry
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            with telemetry.tracer.start_as_current_span(f"faultprint.v1/{name}") as span:
                try:
                    return await handler(self, request, context)
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


def log_error(name: str, code: grpc.StatusCode, message: str, exc: BaseException) -> None:
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s failed: %s", name, message, exc_info=exc)
    else:
        log.info("%s -> %s: %s", name, code.name, message)
