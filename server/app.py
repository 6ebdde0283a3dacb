"""Assembles a server replica: Redis, model host, batcher, services, health and reflection.

``create_server(settings)`` builds and starts one and returns it with its bound port
(tests bind port 0); ``serve(settings)`` runs one until SIGINT or SIGTERM.
Shutdown order: health goes NOT_SERVING, the gRPC server drains, then the batcher,
the write-behind, the shadow, the replica sync, the loop-lag monitor and the Redis pool close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.exceptions
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from faultprint.client.channels import CLIENT_PING_INTERVAL_MS
from faultprint.registry.connection import AsyncRedis, connect_async
from faultprint.registry.layout import RedisLayout
from faultprint.registry.migration import legacy_markers
from faultprint.registry.outbox import OutboxSweep
from faultprint.registry.signing import SigningKeyError, TrustedKeys, verify_directory
from faultprint.server import telemetry as telemetry_setup
from faultprint.server.batching.scheduler import BatchScheduler
from faultprint.server.batching.session import Encoder
from faultprint.server.incidents.feed import IncidentFeed
from faultprint.server.incidents.onap import OnapPublisher
from faultprint.server.loop_lag import LoopLagMonitor
from faultprint.server.model.devices import configure_threads, resolve_devices
from faultprint.server.model.host import ModelHost, ServingState
from faultprint.server.model.replica_sync import ReplicaSync
from faultprint.server.model.shadow import Shadow
from faultprint.server.monitoring.explanation import ReferenceProfiles
from faultprint.server.monitoring.monitor import NodeMonitor
from faultprint.server.monitoring.node_store import NodeStore
from faultprint.server.references.node_state import NodeStateWriter
from faultprint.server.references.store import ReferenceStore
from faultprint.server.rpc.health import (
    INCIDENT_SERVICE,
    MODEL_SERVICE,
    PROBE_SERVICE,
    REFERENCE_CASE_SERVICE,
    SERVICE_NAMES,
    ReplicaHealth,
)
from faultprint.server.rpc.incident_service import IncidentServicer
from faultprint.server.rpc.model_service import ModelServicer
from faultprint.server.rpc.probe_service import ProbeServicer
from faultprint.server.rpc.reference_case_service import ReferenceCaseServicer
from faultprint.server.rpc.requests import add_service
from faultprint.server.security.access import AccessInterceptor, PolicyError, PolicyFile
from faultprint.server.security.transport import SecurityOptions, TransportError, server_credentials
from faultprint.server.settings import ServerSettings, SettingsError
from faultprint.server.supervisor import SupervisorLink
from faultprint.server.telemetry import ServerTelemetry

log = logging.getLogger(__name__)


class StartupError(Exception):
    """A replica cannot start; the message says why and what to change, in one line."""


# Longest one part of a stopping replica may take (running batches finish, pending writes go).
_PART_STOP_S = 10.0


@dataclass
class FaultprintServer:
    """A running replica and the parts it must close in order."""

    settings: ServerSettings
    grpc_server: grpc.aio.Server
    health: ReplicaHealth
    probes: ProbeServicer
    host: ModelHost
    scheduler: BatchScheduler
    writer: NodeStateWriter
    monitor: NodeMonitor
    onap: OnapPublisher
    sync: ReplicaSync
    shadow: Shadow
    redis: AsyncRedis
    loop_lag: LoopLagMonitor
    outbox_sweep: OutboxSweep
    # The plaintext health-only port and its number, if one is configured.
    health_server: grpc.aio.Server | None = None
    health_port: int = 0

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Waits until the first full sync with Redis is done (tests and the demo use this)."""
        await asyncio.wait_for(self.sync.synced.wait(), timeout_s)

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stops in order: NOT_SERVING on the health service, still answering for drain_s,
        then the port closes. A part that does not stop in time is logged and left behind.

        A replica that SIGTERM cannot stop is worse than one that leaves a Redis write or
        a shadow chunk unfinished: they are caches, and the next replica rebuilds them.
        """
        await self.health.drain()
        if drain_s > 0:
            log.info("draining: NOT_SERVING for %.1f s before the port closes", drain_s)
            await asyncio.sleep(drain_s)
        try:  # minute streams end only after this replica's last write (NodeMonitor.quiesce)
            await asyncio.wait_for(self.monitor.quiesce(), _PART_STOP_S)
        except TimeoutError:
            log.error("shutdown: the node monitor did not quiesce in %.0f s; going on", _PART_STOP_S)
        await self.grpc_server.stop(self.settings.shutdown_grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)
        parts: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
            ("batcher", self.scheduler.close),
            ("node monitor", self.monitor.close),
            ("ONAP publisher", self.onap.close),
            ("node-state writer", self.writer.close),
            ("shadow", self.shadow.close),
            ("replica sync", self.sync.stop),
            ("outbox sweep", self.outbox_sweep.close),
            ("loop-lag monitor", self.loop_lag.close),
        )
        for name, close in parts:
            try:
                await asyncio.wait_for(close(), _PART_STOP_S)
            except TimeoutError:
                log.error("shutdown: the %s did not stop in %.0f s; going on without it", name, _PART_STOP_S)
        self.host.close()
        await self.redis.aclose()


async def create_server(settings: ServerSettings) -> tuple[FaultprintServer, int]:
    """Builds and starts a replica; returns it and the port it is bound to. A replica that cannot
    start leaves no Redis connection open."""
    client = await _redis_client(settings)
    try:
        return await _start(settings, client)
    except BaseException:
        await client.aclose()
        raise


async def _start(settings: ServerSettings, client: AsyncRedis) -> tuple[FaultprintServer, int]:
    security = settings.security
    interceptors = _access(security)
    try:
        credentials = server_credentials(security)
    except TransportError as exc:
        raise StartupError(f"{exc}; fix --tls-cert-file, --tls-key-file or --tls-client-ca-file") from exc
    telemetry_setup.configure(settings.telemetry_exporter, settings.metrics_address)
    telemetry = ServerTelemetry.create()
    layout = RedisLayout(settings.redis_prefix)
    origin = uuid.uuid4().hex
    store = ReferenceStore(client, layout, origin)
    options = settings.batching
    configure_threads(settings.intra_op_threads)
    try:
        devices = resolve_devices(
            settings.devices, settings.cpu_devices, (settings.worker_index, settings.workers)
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    host = ModelHost(store, options.batch_sizes, devices, settings.runner, freeze_gc=settings.freeze_gc)
    shadow = Shadow(host, client, layout, settings.shadow)
    encoder = Encoder(host, telemetry, options, shadow, settings.default_top_k)
    scheduler = encoder.scheduler
    telemetry.observe_queue(lambda: scheduler.queue_depth, lambda: scheduler.batches_in_flight)
    log.info("encoder devices: %s", ", ".join(devices))
    writer = NodeStateWriter(client, layout, settings.node_state_ttl_s)
    watching = settings.monitoring
    node_store = NodeStore(
        client, layout, store.outbox, watching.node_idle_expiry_s, watching.incident_history_ttl_s,
        watching.incident_stream_max_events,
    )  # fmt: skip
    monitor = NodeMonitor(
        encoder, writer, node_store, ReferenceProfiles(store), watching, settings.life_cycle
    )
    telemetry.observe_minute_streams(monitor.stats.outcomes, lambda: len(monitor.windows or ()))
    telemetry.observe_incidents(monitor.open_incidents)
    telemetry.observe_models(
        lambda: {"serving": _version(host.current), "candidate": _version(host.candidate)}
    )

    trusted = _trusted_keys(settings)
    follow_registry = settings.model_source == "redis"
    if not follow_registry:
        try:  # a bad artifact, or one whose signature does not verify, stops start-up here
            if trusted is not None:
                signer = verify_directory(Path(settings.model_source), trusted)
                log.info("model %s is signed by trusted key %s", settings.model_source, signer)
            encoder.serving(await host.load(Path(settings.model_source)))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StartupError(
                f"cannot reach Redis at {_without_password(settings.redis_url)} ({exc}); start one "
                "(scripts/with-redis.sh) or set REDIS_URL / --redis-url"
            ) from exc

    grpc_server = grpc.aio.server(
        interceptors=[*telemetry_setup.rpc_span_interceptors(), *interceptors],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            *_connection_options(settings),
        ],
    )
    replica_health = ReplicaHealth()
    probes = ProbeServicer(encoder, writer, monitor, settings.stream_max_unanswered)
    add_service(grpc_server, probes, PROBE_SERVICE)
    add_service(grpc_server, ReferenceCaseServicer(encoder), REFERENCE_CASE_SERVICE)
    add_service(grpc_server, ModelServicer(host, writer, telemetry), MODEL_SERVICE)
    feed = IncidentFeed(client, layout, store.outbox, watching.incident_stream_max_events)
    onap = OnapPublisher(client, layout, settings.onap, origin)
    add_service(
        grpc_server, IncidentServicer(feed, telemetry, settings.life_cycle.of_last_minutes), INCIDENT_SERVICE
    )
    health_pb2_grpc.add_HealthServicer_to_server(replica_health.servicer, grpc_server)
    if security.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), grpc_server
        )
    try:
        if credentials is None:
            port = grpc_server.add_insecure_port(settings.listen_address)
        else:
            port = grpc_server.add_secure_port(settings.listen_address, credentials)
    except RuntimeError as exc:
        raise StartupError(
            f"cannot listen on {settings.listen_address}: the port is in use or the address is not "
            "this machine's; choose another --listen-address (port 0 picks a free one)"
        ) from exc
    sync = ReplicaSync(
        client, layout, host, follow_registry, Path(settings.model_cache_dir), replica_health,
        encoder.serving, address=f"{settings.listen_address.rsplit(':', 1)[0]}:{port}",
        worker=settings.worker_index, trusted_keys=trusted,
    )  # fmt: skip
    loop_lag = LoopLagMonitor(telemetry.event_loop_lag_s.record)
    server = FaultprintServer(
        settings, grpc_server, replica_health, probes, host, scheduler, writer, monitor, onap, sync, shadow,
        client, loop_lag, OutboxSweep(store.outbox, settings.outbox_sweep_interval_s),
    )  # fmt: skip
    server.health_server, server.health_port = await _health_port(settings, replica_health)
    await replica_health.update(model_loaded=False)
    await grpc_server.start()
    scheduler.start()
    writer.start()
    monitor.start()
    onap.start()
    shadow.start()
    server.sync.start()
    loop_lag.start()
    server.outbox_sweep.start()
    await _warn_of_legacy_keys(client, settings.redis_prefix)
    log.info(
        "faultprint server listening on port %d (%s; model source: %s)",
        port, "mutual TLS" if security.tls_client_ca_file else "TLS" if security.tls else "plaintext",
        settings.model_source,
    )  # fmt: skip
    return server, port


async def _health_port(
    settings: ServerSettings, replica_health: ReplicaHealth
) -> tuple[grpc.aio.Server | None, int]:
    """The plaintext port serving only the health service, started, and its number (None, 0: none)."""
    if not settings.health_listen_address:
        return None, 0
    health_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(replica_health.servicer, health_server)
    try:
        port = health_server.add_insecure_port(settings.health_listen_address)
    except RuntimeError as exc:
        raise StartupError(
            f"cannot listen on {settings.health_listen_address} for health checks: the port is in use or "
            "the address is not this machine's; choose another --health-listen-address"
        ) from exc
    await health_server.start()
    log.info("health checks also served in plaintext on port %d", port)
    return health_server, port


def _version(state: ServingState | None) -> str | None:
    return None if state is None else state.version


def _connection_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """HTTP/2 keepalive and connection age, as gRPC core's channel arguments (milliseconds)."""
    options = [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 0),
    ]
    if settings.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)))
    return options


def _access(security: SecurityOptions) -> list[grpc.aio.ServerInterceptor]:
    """The access interceptor when a policy is configured (none costs nothing per call)."""
    if not security.access_policy_file:
        log.warning("no access policy (--access-policy-file): every caller may call everything")
        return []
    try:
        policy = PolicyFile(Path(security.access_policy_file))
    except PolicyError as exc:
        raise StartupError(str(exc)) from exc
    if not security.tls:
        log.warning("an access policy without TLS: bearer tokens cross the network in plaintext")
    return [AccessInterceptor(policy)]


def _trusted_keys(settings: ServerSettings) -> TrustedKeys | None:
    """The keys model versions must be signed with; None, with a warning, when none are configured."""
    if not settings.model_trusted_keys:
        log.warning("no trusted keys (--model-trusted-keys): model signatures are not checked, so whoever "
                    "can write to Redis decides which model this replica serves")  # fmt: skip
        return None
    try:
        return TrustedKeys.from_setting(settings.model_trusted_keys)
    except SigningKeyError as exc:
        raise StartupError(f"{exc}; fix --model-trusted-keys") from exc


async def _redis_client(settings: ServerSettings) -> AsyncRedis:
    """The client of the deployment's Redis or Redis Cluster (settings.redis_cluster)."""
    cluster = {"yes": True, "no": False}.get(settings.redis_cluster)
    url = settings.redis_url
    try:
        return await connect_async(url, cluster, socket_timeout=5, socket_connect_timeout=2)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning(
            "cannot reach Redis at %s to ask whether it is a cluster (%s); taking it for a single server "
            "(set --redis-cluster yes for a cluster)", _without_password(url), exc,
        )  # fmt: skip
        return await connect_async(url, False, socket_timeout=5, socket_connect_timeout=2)
    except redis.exceptions.NoPermissionError as exc:
        raise StartupError(
            f"the Redis user of {_without_password(url)} may not run CLUSTER INFO ({exc}); grant it, or "
            "set --redis-cluster yes or no"
        ) from exc


async def _warn_of_legacy_keys(client: AsyncRedis, prefix: str) -> None:
    """Logs an error when Redis holds the deployment's keys without hash tags: they look like no
    data to this release until faultprint-trainer migrate-keys renames them."""
    try:
        found = [key for key in legacy_markers(prefix) if await client.exists(key)]
    except (redis.exceptions.RedisError, OSError):
        return  # Redis unreachable: replica sync reports it
    if found:
        log.error(
            "Redis holds this deployment's keys in the layout before hash tags (%s): this replica does not "
            "see them. Stop the replicas and run `faultprint-trainer migrate-keys` (docs/operations.md)",
            ", ".join(found),
        )


def _without_password(url: str) -> str:
    """A Redis URL fit for a message: its password, if any, replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    return parts._replace(netloc=f"{user}***@{parts.netloc.rsplit('@', 1)[1]}").geturl()


async def serve(settings: ServerSettings) -> None:
    """Runs a replica until SIGINT or SIGTERM or, for a worker, until its supervisor is gone."""
    supervisor = SupervisorLink.from_environment()
    server, _port = await create_server(settings)
    stop = asyncio.Event()
    drain_s = 0.0

    def stop_on(signum: int) -> None:
        nonlocal drain_s
        if signum == signal.SIGTERM:  # from an orchestrator: let load balancers see it go
            drain_s = settings.shutdown_drain_s
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_on, sig)
    supervisor.on_supervisor_lost(loop, stop.set)
    supervisor.notify_ready()
    await stop.wait()
    log.info("stopping")
    await server.stop(drain_s)
