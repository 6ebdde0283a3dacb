"""IncidentService: operators and policy engines watch, list and acknowledge incidents; node conditions."""

from __future__ import annotations

import grpc

from faultprint.server.incidents.feed import IncidentFeed
from faultprint.server.monitoring.node_store import NODE_HISTORY
from faultprint.server.references.store import check_id
from faultprint.server.rpc.errors import InvalidArgument
from faultprint.server.rpc.health import INCIDENT_SERVICE
from faultprint.server.rpc.requests import Undecodable
from faultprint.server.rpc.unary import refuse, unary_rpc
from faultprint.server.telemetry import ServerTelemetry
from faultprint.v1 import incident_service_pb2, incident_service_pb2_grpc

# Incidents ListNodeIncidents returns when page_size is 0, and at most.
DEFAULT_PAGE = 50
MAX_PAGE = NODE_HISTORY


class IncidentServicer(incident_service_pb2_grpc.IncidentServiceServicer):
    service_name = INCIDENT_SERVICE.full_name

    def __init__(self, feed: IncidentFeed, telemetry: ServerTelemetry, of_last_minutes: int) -> None:
        self.feed = feed
        self.telemetry = telemetry
        self.of_last_minutes = of_last_minutes

    async def WatchIncidents(
        self, request: incident_service_pb2.WatchIncidentsRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Writes matching events until the caller cancels; a bad request or Redis failing ends
        the stream with its status."""
        try:
            if isinstance(request, Undecodable):
                raise request.error()
            check_id("network", request.network, optional=True)
            check_id("node", request.node, optional=True)
            if request.node and not request.network:
                raise InvalidArgument("a node filter needs its network", field="network")
            events = self.feed.watch(request.network, request.node, request.label, request.cursor)
            async for event in events:
                await context.write(event)
        except Exception as exc:
            await refuse("WatchIncidents", context, exc)

    @unary_rpc("ListOpenIncidents")
    async def ListOpenIncidents(
        self, request: incident_service_pb2.ListOpenIncidentsRequest, context: grpc.aio.ServicerContext
    ) -> incident_service_pb2.ListOpenIncidentsResponse:
        check_id("network", request.network)
        return incident_service_pb2.ListOpenIncidentsResponse(
            incidents=await self.feed.open_incidents(request.network)
        )

    @unary_rpc("ListNodeIncidents")
    async def ListNodeIncidents(
        self, request: incident_service_pb2.ListNodeIncidentsRequest, context: grpc.aio.ServicerContext
    ) -> incident_service_pb2.ListNodeIncidentsResponse:
        check_id("network", request.network)
        check_id("node", request.node)
        if request.page_size > MAX_PAGE:
            raise InvalidArgument(
                f"page_size is {request.page_size}; a node keeps its last {MAX_PAGE} incidents",
                field="page_size",
            )
        incidents = await self.feed.node_incidents(
            request.network, request.node, request.page_size or DEFAULT_PAGE
        )
        return incident_service_pb2.ListNodeIncidentsResponse(incidents=incidents)

    @unary_rpc("AcknowledgeIncident")
    async def AcknowledgeIncident(
        self, request: incident_service_pb2.AcknowledgeIncidentRequest, context: grpc.aio.ServicerContext
    ) -> incident_service_pb2.AcknowledgeIncidentResponse:
        check_id("network", request.network)
        if not 1 <= len(request.operator) <= 128:
            raise InvalidArgument(
                "operator must name who takes the incident in hand (1-128 characters)", field="operator"
            )
        if len(request.note) > 4096:
            raise InvalidArgument(f"note is {len(request.note)} characters; at most 4096", field="note")
        incident = await self.feed.acknowledge(
            request.network, request.incident_id, request.operator, request.note
        )
        return incident_service_pb2.AcknowledgeIncidentResponse(incident=incident)

    @unary_rpc("GetNodeCondition")
    async def GetNodeCondition(
        self, request: incident_service_pb2.GetNodeConditionRequest, context: grpc.aio.ServicerContext
    ) -> incident_service_pb2.GetNodeConditionResponse:
        check_id("network", request.network)
        check_id("node", request.node)
        condition = await self.feed.condition(request.network, request.node, self.of_last_minutes)
        return incident_service_pb2.GetNodeConditionResponse(condition=condition)
