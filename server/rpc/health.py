"""What the standard gRPC health service says of a replica, on grpc.aio's own asyncio servicer.

- The server ("") and every faultprint service are SERVING once a model is loaded.
- ReferenceCaseService goes NOT_SERVING while the reference store has lost its data
  (server/model/replica_sync.py): the replica keeps classifying with what it holds in memory,
  and refuses enrolments and deletions until the store is restored.
- A stopping replica reports NOT_SERVING for every service for its drain period before
  its port closes, so load balancers and Kubernetes readiness probes move traffic away.

The asyncio servicer matters: the synchronous one holds an executor thread for each open
Watch, and a handful of Watch calls (clients open one on every reconnect) left Check
without a thread to answer on.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

from faultprint.v1 import (
    incident_service_pb2,
    model_service_pb2,
    probe_service_pb2,
    reference_case_service_pb2,
)

PROBE_SERVICE = probe_service_pb2.DESCRIPTOR.services_by_name["ProbeService"]
REFERENCE_CASE_SERVICE = reference_case_service_pb2.DESCRIPTOR.services_by_name["ReferenceCaseService"]
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
INCIDENT_SERVICE = incident_service_pb2.DESCRIPTOR.services_by_name["IncidentService"]
SERVICES = (PROBE_SERVICE, REFERENCE_CASE_SERVICE, MODEL_SERVICE, INCIDENT_SERVICE)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReplicaHealth:
    """Keeps the health servicer's statuses in step with the replica's model and store."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.model_loaded = False
        self.store_lost = False

    async def update(self, *, model_loaded: bool | None = None, store_lost: bool | None = None) -> None:
        if model_loaded is not None:
            self.model_loaded = model_loaded
        if store_lost is not None:
            self.store_lost = store_lost
        serving = _SERVING if self.model_loaded else _NOT_SERVING
        for name in ("", PROBE_SERVICE.full_name, MODEL_SERVICE.full_name, INCIDENT_SERVICE.full_name):
            await self.servicer.set(name, serving)
        writes = _SERVING if self.model_loaded and not self.store_lost else _NOT_SERVING
        await self.servicer.set(REFERENCE_CASE_SERVICE.full_name, writes)

    async def drain(self) -> None:
        """Every service NOT_SERVING from now on, whatever is set later."""
        await self.servicer.enter_graceful_shutdown()
