"""How a client reaches faultprint's replicas: plaintext or TLS, a client certificate, a bearer token."""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

ChannelOptions = Sequence[tuple[str, Any]]

# Clients ping an idle connection this often, so that a probe notices a replica that went
# away without a word (a node lost, a network partition); servers allow pings this often.
CLIENT_PING_INTERVAL_MS = 10_000
_ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def spread_target(target: str) -> tuple[str, list[tuple[str, Any]]]:
    """A gRPC target and channel options that spread calls over every replica it names.

    "host:port": one replica. "a:50051,b:50051": each listed replica, in round robin;
    names are resolved once, here. "dns:///faultprint-headless:50051": every address
    the name resolves to (a Kubernetes headless Service), in round robin, re-resolved by
    gRPC as replicas come and go.
    """
    if target.startswith("dns:"):
        return target, [("grpc.service_config", _ROUND_ROBIN)]
    if "," not in target:
        return target, []
    addresses = [_resolved(part.strip()) for part in target.split(",") if part.strip()]
    families = {"ipv6" if a.startswith("[") else "ipv4" for a in addresses}
    if len(families) != 1:
        raise ValueError(f"target {target!r} mixes IPv4 and IPv6 replicas; list one family")
    return f"{families.pop()}:{','.join(addresses)}", [("grpc.service_config", _ROUND_ROBIN)]


def _resolved(address: str) -> str:
    """host:port as an IP literal and port ([v6]:port for IPv6)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"replica address {address!r} must be host:port")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = ipaddress.ip_address(socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)[0][4][0])
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass(frozen=True)
class ChannelSecurity:
    """What a client shows a replica, and what it trusts. Empty: plaintext, no credentials."""

    # PEM certificates of the authorities that sign the servers' certificates. Set: TLS
    # (an empty string with tls=True trusts the system's authorities).
    ca_file: str = ""
    # PEM client certificate and its key, for servers that ask for mutual TLS.
    cert_file: str = ""
    key_file: str = ""
    # Bearer token sent on every call (authorization metadata).
    token: str = ""
    # TLS with the system's authorities when no ca_file is given.
    tls: bool = False
    # The name to check the server's certificate against, when it differs from the target's host.
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs both cert_file and key_file")

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.ca_file or self.cert_file)

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> ChannelSecurity:
        """From FAULTPRINT_TLS_CA, FAULTPRINT_TLS_CERT, FAULTPRINT_TLS_KEY, FAULTPRINT_TOKEN
        (or FAULTPRINT_TOKEN_FILE) and FAULTPRINT_TLS_SERVER_NAME."""
        env = dict(os.environ if env is None else env)
        token = env.get("FAULTPRINT_TOKEN", "")
        if not token and env.get("FAULTPRINT_TOKEN_FILE"):
            token = Path(env["FAULTPRINT_TOKEN_FILE"]).read_text().strip()
        return cls(
            ca_file=env.get("FAULTPRINT_TLS_CA", ""),
            cert_file=env.get("FAULTPRINT_TLS_CERT", ""),
            key_file=env.get("FAULTPRINT_TLS_KEY", ""),
            token=token,
            server_name=env.get("FAULTPRINT_TLS_SERVER_NAME", ""),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials, read from the files now."""

        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))

    def options(self, options: ChannelOptions) -> list[tuple[str, Any]]:
        named = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return [*options, *named]


def _channel_args(target: str, options: ChannelOptions) -> tuple[str, list[tuple[str, Any]]]:
    spread, balancing = spread_target(target)
    return spread, [*options, *balancing, ("grpc.keepalive_time_ms", CLIENT_PING_INTERVAL_MS)]


def channel(target: str, options: ChannelOptions, security: ChannelSecurity | None = None) -> grpc.Channel:
    """A blocking channel to target with security's credentials (None: from the environment)."""
    security = security or ChannelSecurity.from_environment()
    target, options = _channel_args(target, options)
    opened = (
        grpc.secure_channel(target, security.credentials(), security.options(options))
        if security.uses_tls
        else grpc.insecure_channel(target, options)
    )
    if not security.token:
        return opened
    return grpc.intercept_channel(opened, _BearerToken(security.token))


def aio_channel(
    target: str, options: ChannelOptions, security: ChannelSecurity | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to target with security's credentials (None: from the environment)."""
    security = security or ChannelSecurity.from_environment()
    target, options = _channel_args(target, options)
    interceptors = _aio_token_interceptors(security.token) if security.token else None
    if security.uses_tls:
        return grpc.aio.secure_channel(
            target, security.credentials(), security.options(options), interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options, interceptors=interceptors)


def _with_token(metadata: Any, token: str) -> list[tuple[str, str]]:
    return [*(metadata or ()), ("authorization", f"Bearer {token}")]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token to every call of a blocking channel (plaintext or TLS alike)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method, details.timeout, _with_token(details.metadata, self.token), details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )  # fmt: skip

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind (grpc.aio dispatches on the class), each adding the token."""

    def details(call: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return call._replace(metadata=_with_token(call.metadata, token))

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, call: Any, request: Any) -> Any:
            return await continuation(details(call), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation: Any, call: Any, request: Any) -> Any:
            return await continuation(details(call), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation: Any, call: Any, requests: Any) -> Any:
            return await continuation(details(call), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation: Any, call: Any, requests: Any) -> Any:
            return await continuation(details(call), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
