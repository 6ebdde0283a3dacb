"""Callers, their roles and networks: authentication and authorisation of every faultprint RPC.

A caller is named in the access policy file (TOML) with a role and the networks it may
touch, and known by a bearer token (``authorization: Bearer ...``; the file holds only
its SHA-256) or by its client certificate under mutual TLS (subject common name or DNS
name). Roles nest: a probe sends windows and minutes and reads diagnoses and conditions;
an operator also manages reference cases, baselines and incidents; an admin may call
everything on every network. Health checks and reflection need no caller.

Unary and server-streaming requests are checked whole before their handler runs.
Client-streaming RPCs carry a network per window or minute: their handlers ask
``refusal(network)`` for each, and refuse that item alone with PERMISSION_DENIED.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import hmac
import logging
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from faultprint.server.rpc.errors import PermissionDenied, Unauthenticated
from faultprint.server.rpc.requests import HANDLER_FACTORIES
from faultprint.server.rpc.unary import refuse

log = logging.getLogger(__name__)

ROLES = ("probe", "operator", "admin")
# The network list that grants every network.
EVERY_NETWORK = "*"

_PROBE = "probe"
_OPERATOR = "operator"
# The least role each method needs. A faultprint method missing here needs admin.
METHOD_ROLES: Mapping[str, str] = {
    "/faultprint.v1.ProbeService/EmbedWindow": _PROBE,
    "/faultprint.v1.ProbeService/ClassifyWindow": _PROBE,
    "/faultprint.v1.ProbeService/StreamClassifyWindows": _PROBE,
    "/faultprint.v1.ProbeService/StreamMinutes": _PROBE,
    "/faultprint.v1.ModelService/GetModelInfo": _PROBE,
    "/faultprint.v1.ModelService/GetNodeDiagnosis": _PROBE,
    "/faultprint.v1.IncidentService/GetNodeCondition": _PROBE,
    "/faultprint.v1.ReferenceCaseService/CreateReferenceCase": _OPERATOR,
    "/faultprint.v1.ReferenceCaseService/GetReferenceCase": _OPERATOR,
    "/faultprint.v1.ReferenceCaseService/ListReferenceCases": _OPERATOR,
    "/faultprint.v1.ReferenceCaseService/DeleteReferenceCase": _OPERATOR,
    "/faultprint.v1.ReferenceCaseService/GetNetworkBaseline": _OPERATOR,
    "/faultprint.v1.ReferenceCaseService/AddBaselineTraffic": _OPERATOR,
    "/faultprint.v1.IncidentService/WatchIncidents": _OPERATOR,
    "/faultprint.v1.IncidentService/ListOpenIncidents": _OPERATOR,
    "/faultprint.v1.IncidentService/ListNodeIncidents": _OPERATOR,
    "/faultprint.v1.IncidentService/AcknowledgeIncident": _OPERATOR,
}
# Services any connection may call: orchestrators' health probes, and grpcurl's reflection.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Seconds between looks at the policy file for a change.
POLICY_CHECK_INTERVAL_S = 1.0


class PolicyError(ValueError):
    """The access policy file cannot be used; the message names the entry and the fix."""


@dataclass(frozen=True)
class Caller:
    """One caller the policy names."""

    name: str
    role: str
    # The networks it may touch; None for every network.
    networks: frozenset[str] | None

    def may_call(self, method: str) -> bool:
        needed = METHOD_ROLES.get(method, "admin")
        return ROLES.index(self.role) >= ROLES.index(needed)

    def refusal(self, network: str) -> PermissionDenied | None:
        """Why this caller may not touch network ('' meaning every network), or None."""
        if self.networks is None or (network and network in self.networks):
            return None
        if not network:
            return PermissionDenied(
                f"caller {self.name!r} may only ask about its own networks; name one",
                field="network",
                reason="NETWORK_NOT_ALLOWED",
            )
        return PermissionDenied(
            f"caller {self.name!r} may not use network {network!r}",
            field="network",
            reason="NETWORK_NOT_ALLOWED",
        )


# The caller of the RPC being served, for the handlers of client-streaming RPCs; None when
# no access policy is configured.
CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("faultprint_caller", default=None)


def refusal(network: str) -> PermissionDenied | None:
    """Why the current RPC's caller may not touch network, or None (always None without a policy)."""
    caller = CALLER.get()
    return None if caller is None else caller.refusal(network)


@dataclass(frozen=True)
class AccessPolicy:
    """The callers of a policy file, indexed by how they are known."""

    by_token_digest: Mapping[str, Caller]
    by_certificate_name: Mapping[str, Caller]

    @classmethod
    def parse(cls, text: str, source: str = "access policy") -> AccessPolicy:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source} is not valid TOML: {exc}") from exc
        unknown = set(document) - {"caller"}
        if unknown:
            raise PolicyError(f"{source}: unknown tables {sorted(unknown)}; only [[caller]] entries")
        tokens: dict[str, Caller] = {}
        names: dict[str, Caller] = {}
        for position, entry in enumerate(document.get("caller", []), 1):
            caller, digests, certificate_names = _caller(entry, f"{source}, caller {position}")
            for key, index in [(d, tokens) for d in digests] + [(n, names) for n in certificate_names]:
                if key in index:
                    raise PolicyError(f"{source}: {key!r} names both {index[key].name!r} and {caller.name!r}")
                index[key] = caller
        return cls(tokens, names)

    @classmethod
    def load(cls, path: Path) -> AccessPolicy:
        try:
            text = path.read_text()
        except OSError as exc:
            raise PolicyError(f"cannot read the access policy {path}: {exc.strerror}") from exc
        return cls.parse(text, str(path))

    def authenticate(self, metadata: Any, auth_context: Mapping[str, list[bytes]]) -> Caller:
        """The caller a call's bearer token names, else its verified client certificate."""
        token = _bearer_token(metadata)
        if token is not None:
            caller = _by_digest(self.by_token_digest, hashlib.sha256(token.encode()).hexdigest())
            if caller is None:
                raise Unauthenticated(
                    "the bearer token is not one the access policy knows", reason="UNKNOWN_TOKEN"
                )
            return caller
        for name in _certificate_names(auth_context):
            if name in self.by_certificate_name:
                return self.by_certificate_name[name]
        if _certificate_names(auth_context):
            raise Unauthenticated(
                "the client certificate names no caller of the access policy", reason="UNKNOWN_CERTIFICATE"
            )
        raise Unauthenticated(
            "no credentials: send 'authorization: Bearer <token>' or a client certificate",
            reason="NO_CREDENTIALS",
        )


def _caller(entry: Any, where: str) -> tuple[Caller, list[str], list[str]]:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where}: expected a table")
    allowed = {"name", "role", "networks", "token_sha256", "certificate_names"}
    if set(entry) - allowed:
        raise PolicyError(f"{where}: unknown keys {sorted(set(entry) - allowed)}; allowed: {sorted(allowed)}")
    name = entry.get("name")
    role = entry.get("role")
    networks = entry.get("networks")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{where}: needs a name")
    if role not in ROLES:
        raise PolicyError(f"{where} ({name}): role is {role!r}; one of {ROLES}")
    if not isinstance(networks, list) or not networks or not all(isinstance(n, str) for n in networks):
        raise PolicyError(f'{where} ({name}): networks must list network ids, or ["{EVERY_NETWORK}"]')
    digests = [d.lower() for d in _strings(entry, "token_sha256", where)]
    for digest in digests:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise PolicyError(f"{where} ({name}): token_sha256 holds hex SHA-256 digests (64 characters)")
    certificate_names = _strings(entry, "certificate_names", where)
    if not digests and not certificate_names:
        raise PolicyError(f"{where} ({name}): needs token_sha256 or certificate_names to be known by")
    scope = None if EVERY_NETWORK in networks else frozenset(networks)
    return Caller(name, role, scope), digests, certificate_names


def _strings(entry: dict[str, Any], key: str, where: str) -> list[str]:
    values = entry.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PolicyError(f"{where}: {key} must be a list of strings")
    return values


def _bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "the authorization header must read 'Bearer <token>'", reason="MALFORMED_AUTHORIZATION"
                )
            return token.strip()
    return None


def _by_digest(callers: Mapping[str, Caller], digest: str) -> Caller | None:
    """The caller of a token digest, compared in constant time."""
    found = None
    for known, caller in callers.items():
        if hmac.compare_digest(known, digest):
            found = caller
    return found


def _certificate_names(auth_context: Mapping[str, list[bytes]]) -> list[str]:
    """The verified client certificate's common name and DNS names (empty without mutual TLS)."""
    values = [
        *auth_context.get("x509_common_name", ()),
        *auth_context.get("x509_subject_alternative_name", ()),
    ]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class PolicyFile:
    """The access policy as its file says now: looked at once per interval, reloaded on change.
    A changed file that does not parse leaves the previous policy in force, with an error logged."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.policy = AccessPolicy.load(path)
        self._stamp = self._stat()
        self._next_check = clock() + POLICY_CHECK_INTERVAL_S

    def _stat(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_size)

    def current(self) -> AccessPolicy:
        now = self.clock()
        if now < self._next_check:
            return self.policy
        self._next_check = now + POLICY_CHECK_INTERVAL_S
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.policy = AccessPolicy.load(self.path)
                log.info("access policy %s reloaded", self.path)
            except PolicyError as exc:
                log.error("access policy not reloaded, the previous one stays in force: %s", exc)
        return self.policy


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Admits each faultprint call only from a caller the policy names, in role and network."""

    def __init__(self, policy: PolicyFile) -> None:
        self.policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        return _guarded(handler, functools.partial(self._admit, method))

    async def _admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Caller:
        try:
            caller = self.policy.current().authenticate(context.invocation_metadata(), context.auth_context())
            if not caller.may_call(method):
                raise PermissionDenied(
                    f"caller {caller.name!r} (role {caller.role}) may not call {method}",
                    reason="ROLE_NOT_ALLOWED",
                )
            network = getattr(request, "network", None)
            if isinstance(network, str):
                refused = caller.refusal(network)
                if refused is not None and (network or method in _EVERY_NETWORK_FILTERS):
                    raise refused
        except (Unauthenticated, PermissionDenied) as exc:
            await refuse(method, context, exc, f" (peer {context.peer()})")
        return caller


# Requests whose empty network means every network; elsewhere an empty network touches none.
_EVERY_NETWORK_FILTERS = frozenset({"/faultprint.v1.IncidentService/WatchIncidents"})

Admit = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Caller]]


def _guarded(handler: grpc.RpcMethodHandler, admit: Admit) -> grpc.RpcMethodHandler:
    """handler with its behaviour run only after admit, the caller set for the handler to read.
    A client-streaming call is admitted before its first message, on its metadata alone; a
    response-streaming handler is an async generator (server/rpc/requests.py)."""
    streaming = handler.request_streaming
    inner = handler.stream_stream or handler.stream_unary or handler.unary_stream or handler.unary_unary

    async def answer(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        token = CALLER.set(await admit(None if streaming else request_or_iterator, context))
        try:
            return await inner(request_or_iterator, context)
        finally:
            CALLER.reset(token)

    async def answers(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        token = CALLER.set(await admit(None if streaming else request_or_iterator, context))
        try:
            async for response in inner(request_or_iterator, context):
                yield response
        finally:
            CALLER.reset(token)

    factory = HANDLER_FACTORIES[(streaming, handler.response_streaming)]
    behaviour = answers if handler.response_streaming else answer
    return factory(behaviour, handler.request_deserializer, handler.response_serializer)
