"""Domain errors and the one place they are mapped to gRPC statuses, with google.rpc.Status details.

Every refusal carries, besides its code and message, an ``ErrorInfo`` (domain
``faultprint.v1``, a reason a program can branch on, and the field when one is at fault)
and, for INVALID_ARGUMENT naming a field, a ``BadRequest`` field violation: clients read
them with ``grpc_status.rpc_status.from_call`` (``faultprint.client.errors.details``).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "faultprint.v1"


class FaultprintError(Exception):
    """A request could not be served; the message says what was wrong and what was expected.

    field: the request field at fault ("window.packed_values", "network"), if one is;
    reason: an UPPER_SNAKE_CASE word for programs, the class's own by default.
    """

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self, message: str, *, field: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        if reason:
            self.reason = reason


class InvalidArgument(FaultprintError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class NotFound(FaultprintError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(FaultprintError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class ResourceExhausted(FaultprintError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "OVERLOADED"


class DeadlineExceeded(FaultprintError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unavailable(FaultprintError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Cancelled(FaultprintError):
    code = grpc.StatusCode.CANCELLED
    reason = "CANCELLED"


class OutOfRange(FaultprintError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "OUT_OF_RANGE"


class FailedPrecondition(FaultprintError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Unauthenticated(FaultprintError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(FaultprintError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for an exception raised while serving."""
    if isinstance(exc, FaultprintError):
        return exc.code, str(exc)
    if _is_redis_outage(exc):
        return grpc.StatusCode.UNAVAILABLE, f"reference store (Redis) unavailable: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def rich_status(exc: BaseException) -> grpc.Status:
    """status_for's code and message with their google.rpc.Status details, for context.abort_with_status."""
    code, message = status_for(exc)
    field = getattr(exc, "field", "")
    reason = exc.reason if isinstance(exc, FaultprintError) else _reason_of(exc)
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=DOMAIN, metadata={"field": field} if field else {}
    )
    details = [info]
    if field and code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=packed))


def _is_redis_outage(exc: BaseException) -> bool:
    # Imported here so this module stays importable without redis for pure unit tests.
    import redis.exceptions

    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


def _reason_of(exc: BaseException) -> str:
    return "REDIS_UNAVAILABLE" if _is_redis_outage(exc) else "INTERNAL"
