"""Registers faultprint's services with request decoders that let a handler answer undecodable bytes.

The generated ``add_*_to_server`` functions decode with ``Message.FromString``; bytes that
are not a valid message then fail inside gRPC before any handler runs, and the caller
gets UNKNOWN ("Unexpected DecodeError"), or a stream ends with no answers at all. Here
such bytes decode to an ``Undecodable`` stand-in instead, which a unary handler refuses
with INVALID_ARGUMENT and a stream handler answers after the windows read before it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor, message, message_factory

from faultprint.server.rpc.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request whose bytes are not a valid message of its type."""

    message_type: str
    size_bytes: int
    reason: str

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"request is not a valid {self.message_type} ({self.size_bytes} bytes): {self.reason}",
            reason="UNDECODABLE_REQUEST",
        )


def tolerant_decoder(message_class: type[message.Message]) -> Callable[[bytes], Any]:
    """A request deserializer that returns Undecodable instead of raising on bad bytes."""
    from_string = message_class.FromString
    name = message_class.DESCRIPTOR.full_name

    def decode(data: bytes) -> Any:
        try:
            return from_string(data)
        except message.DecodeError as exc:
            return Undecodable(name, len(data), str(exc) or "malformed protobuf")

    return decode


# The method handler factory for each (request streaming, response streaming).
HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def as_response_stream(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """A response-streaming handler that writes with context.write, as an async generator.

    grpc.aio runs either form; interceptors that wrap every call (OpenTelemetry's spans,
    the access check) iterate the handler, so each handler takes the generator form here.
    """
    if not inspect.iscoroutinefunction(behaviour):
        return behaviour

    @functools.wraps(behaviour)
    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await behaviour(request, context)
        return
        yield  # unreachable: makes this function an async generator

    return stream


def add_service(server: grpc.aio.Server, servicer: object, service: descriptor.ServiceDescriptor) -> None:
    """Adds servicer's methods for service to server, each with a tolerant request decoder."""
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        factory = HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        behaviour = getattr(servicer, method.name)
        handlers[method.name] = factory(
            as_response_stream(behaviour) if method.server_streaming else behaviour,
            request_deserializer=tolerant_decoder(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
