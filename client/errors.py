"""What a refusal says beyond its code: the google.rpc.Status details faultprint attaches to each one."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorDetails:
    """A refusal's ErrorInfo and BadRequest, read from its trailing metadata."""

    # UPPER_SNAKE_CASE, stable for programs to branch on ("WINDOW_SHAPE", "QUEUE_FULL", ...).
    reason: str = ""
    # The request field at fault ("windows[2].packed_values"), if one is.
    field: str = ""
    # BadRequest field violations: (field, description).
    violations: tuple[tuple[str, str], ...] = ()


def details(error: grpc.RpcError) -> ErrorDetails:
    """The details of a refused call (sync grpc.RpcError or grpc.aio.AioRpcError); empty when it has none."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    raw = next((value for key, value in trailing or () if key == _DETAILS_KEY), None)
    if raw is None:
        return ErrorDetails()
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    request = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(request.DESCRIPTOR):
            detail.Unpack(request)
    violations = tuple((v.field, v.description) for v in request.field_violations)
    return ErrorDetails(info.reason, info.metadata.get("field", ""), violations)
