"""Domain errors and the one place they are mapped to canonical gRPC status codes."""

from __future__ import annotations

import grpc


class FaultprintError(Exception):
    """A request could not be served; the message says what was wrong and what was expected."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(FaultprintError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FaultprintError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FaultprintError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(FaultprintError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(FaultprintError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(FaultprintError):
    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(FaultprintError):
    code = grpc.StatusCode.CANCELLED


class OutOfRange(FaultprintError):
    code = grpc.StatusCode.OUT_OF_RANGE


class FailedPrecondition(FaultprintError):
    code = grpc.StatusCode.FAILED_PRECONDITION


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for an exception raised while serving."""
    if isinstance(exc, FaultprintError):
        return exc.code, str(exc)
    # Imported here so this module stays importable without redis for pure unit tests.
    import redis.exceptions

    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"reference store (Redis) unavailable: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
