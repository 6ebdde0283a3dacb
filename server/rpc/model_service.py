"""ModelService: what the serving model expects, and each node's latest recorded diagnosis."""

from __future__ import annotations

import grpc

from faultprint.server.model.host import ModelHost
from faultprint.server.references.node_state import NodeStateWriter
from faultprint.server.references.store import check_id
from faultprint.server.rpc.errors import NotFound
from faultprint.server.rpc.health import MODEL_SERVICE
from faultprint.server.rpc.unary import unary_rpc
from faultprint.server.telemetry import ServerTelemetry
from faultprint.v1 import model_service_pb2, model_service_pb2_grpc


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    service_name = MODEL_SERVICE.full_name

    def __init__(self, host: ModelHost, node_states: NodeStateWriter, telemetry: ServerTelemetry) -> None:
        self.host = host
        self.node_states = node_states
        self.telemetry = telemetry

    @unary_rpc("GetModelInfo")
    async def GetModelInfo(
        self, request: model_service_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.GetModelInfoResponse:
        meta = self.host.require().runner.metadata
        candidate = self.host.candidate
        return model_service_pb2.GetModelInfoResponse(
            candidate_version=candidate.version if candidate else "",
            model_version=meta.version,
            steps=meta.steps,
            features=meta.features,
            embedding_size=meta.embedding_size,
            distance_threshold=meta.distance_threshold,
            feature_names=list(meta.feature_names),
            reads_network_baselines=meta.network_baseline,
        )

    @unary_rpc("GetNodeDiagnosis")
    async def GetNodeDiagnosis(
        self, request: model_service_pb2.GetNodeDiagnosisRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.GetNodeDiagnosisResponse:
        check_id("network", request.network)
        check_id("node", request.node)
        state = await self.node_states.read(request.network, request.node)
        if state is None:
            raise NotFound(f"no diagnosis recorded for node {request.node!r} in network {request.network!r}")
        return model_service_pb2.GetNodeDiagnosisResponse(node_diagnosis=state)
