"""The three faultprint.v1 services: probes (embed, classify, stream), reference cases, model information."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import grpc
import numpy as np
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from faultprint.v1 import (
    diagnosis_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    probe_service_pb2,
    probe_service_pb2_grpc,
    reference_case_service_pb2,
    reference_case_service_pb2_grpc,
    window_pb2,
)
from server.batch_assembly import BatchBuffers, assemble, split
from server.batch_scheduler import Batch, BatchRun, BatchScheduler
from server.errors import InvalidArgument, NotFound, status_for
from server.model_runner import ModelRunner
from server.node_state_writer import NodeStateWriter
from server.redis_layout import RedisLayout
from server.reference_index import Match, NetworkIndex
from server.reference_store import StoredCase, check_id
from server.rpc import log_error, unary_rpc
from server.serving_state import ModelHost, ServingState
from server.telemetry import ServerTelemetry
from server.window_codec import decode_window

log = logging.getLogger(__name__)

# Most neighbours a request may ask for, and most example windows in one reference case.
MAX_TOP_K = 50
MAX_WINDOWS_PER_CASE = 64
# Windows of one stream computing at once; the stream stops reading beyond this.
MAX_IN_FLIGHT_PER_STREAM = 512

_VERDICTS = {
    "normal": diagnosis_pb2.VERDICT_NORMAL,
    "fault": diagnosis_pb2.VERDICT_FAULT,
    "unknown": diagnosis_pb2.VERDICT_UNKNOWN,
}


@dataclass(frozen=True)
class Embedded:
    """A window's embedding and the serving state whose model produced it."""

    embedding: np.ndarray
    state: ServingState


class Encoder:
    """The batched encoder path: validation, the batch scheduler, and the batch function."""

    def __init__(self, host: ModelHost, telemetry: ServerTelemetry, max_batch_size: int) -> None:
        self.host = host
        self.telemetry = telemetry
        self.scheduler: BatchScheduler[np.ndarray, Embedded] | None = None
        self._buffers = [BatchBuffers(max_batch_size) for _ in host.devices]
        self._device_attributes = [{"device": name} for name in host.devices]

    def decode(self, window: window_pb2.Window) -> np.ndarray:
        meta = self.host.require().runner.metadata
        return decode_window(window, meta.steps, meta.features)

    async def embed(
        self, values: np.ndarray, key: object, context: grpc.aio.ServicerContext | None
    ) -> Embedded:
        assert self.scheduler is not None
        deadline = None
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None:
            deadline = asyncio.get_running_loop().time() + remaining
        return await self.scheduler.submit(values, key=key, deadline=deadline)

    async def run_batch(self, batch: Batch[np.ndarray]) -> BatchRun[Embedded]:
        """Embeds one batch on its device under one model version (read once, here).

        The windows are copied into the device's reusable buffer on the event loop while
        the device may still be computing the previous batch; on a GPU the copy to the
        device is staged on its own thread, so it too overlaps the running batch.
        """
        state = self.host.require()
        runner = state.runners[batch.device]
        buffers = self._buffers[batch.device]
        loop = asyncio.get_running_loop()
        with self.telemetry.tracer.start_as_current_span("faultprint.batch") as span:
            span.set_attribute("batch.size", len(batch.payloads))
            span.set_attribute("batch.padded_size", batch.padded_size)
            span.set_attribute("batch.device", runner.device)
            span.set_attribute("model.version", state.version)
            buffer = buffers.acquire(batch.payloads[0].shape)
            try:
                inputs = assemble(batch.payloads, batch.padded_size, out=buffer)
                if runner.stages_inputs:
                    inputs = await loop.run_in_executor(self.host.stagers[batch.device], runner.stage, inputs)
                outputs, compute_s = await loop.run_in_executor(
                    self.host.executors[batch.device], _timed_embed, runner, inputs
                )
            finally:
                buffers.release(buffer)
        self.telemetry.batch_compute_ms.record(compute_s * 1000, self._device_attributes[batch.device])
        return BatchRun([Embedded(row, state) for row in split(outputs, len(batch.payloads))], compute_s)


def _timed_embed(runner: ModelRunner, inputs: object) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    outputs = runner.embed(inputs)
    return outputs, time.perf_counter() - started


def diagnosis_proto(network: str, node: str, match: Match, state: ServingState) -> diagnosis_pb2.Diagnosis:
    diagnosis = diagnosis_pb2.Diagnosis(
        network=network,
        node=node,
        label=match.label,
        verdict=_VERDICTS[match.verdict],
        distance=match.distance,
        model_version=state.version,
        distance_threshold=state.runner.metadata.distance_threshold,
        neighbours=[
            diagnosis_pb2.Neighbour(reference_case_id=n.case_id, label=n.label, distance=n.distance)
            for n in match.neighbours
        ],
    )
    if match.margin is not None:
        diagnosis.margin = match.margin
    return diagnosis


class ProbeServicer(probe_service_pb2_grpc.ProbeServiceServicer):
    def __init__(self, encoder: Encoder, writer: NodeStateWriter, default_top_k: int) -> None:
        self.encoder = encoder
        self.telemetry = encoder.telemetry
        self.writer = writer
        self.default_top_k = default_top_k

    @unary_rpc("EmbedWindow")
    async def EmbedWindow(
        self, request: probe_service_pb2.EmbedWindowRequest, context: grpc.aio.ServicerContext
    ) -> probe_service_pb2.EmbedWindowResponse:
        embedded = await self.encoder.embed(self.encoder.decode(request.window), None, context)
        return probe_service_pb2.EmbedWindowResponse(
            embedding=embedded.embedding.tolist(), model_version=embedded.state.version
        )

    @unary_rpc("ClassifyWindow")
    async def ClassifyWindow(
        self, request: probe_service_pb2.ClassifyWindowRequest, context: grpc.aio.ServicerContext
    ) -> probe_service_pb2.ClassifyWindowResponse:
        diagnosis = await self._classify(
            request.network, request.node, request.window, request.top_k, context
        )
        return probe_service_pb2.ClassifyWindowResponse(diagnosis=diagnosis)

    async def _classify(
        self,
        network: str,
        node: str,
        window: window_pb2.Window,
        top_k: int,
        context: grpc.aio.ServicerContext | None,
    ) -> diagnosis_pb2.Diagnosis:
        if not node:
            raise InvalidArgument("node is empty: name the node the window was measured on")
        if top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k is {top_k}, at most {MAX_TOP_K} neighbours can be returned")
        values = self.encoder.decode(window)
        _require_network(self.encoder.host.require(), network)
        embedded = await self.encoder.embed(values, (network, node), context)
        index = _require_network(embedded.state, network)
        threshold = embedded.state.runner.metadata.distance_threshold
        match = index.match(embedded.embedding, top_k or self.default_top_k, threshold)
        self.writer.record(network, node, embedded.embedding, match, embedded.state.version)
        return diagnosis_proto(network, node, match, embedded.state)

    async def StreamClassifyWindows(
        self,
        request_iterator: AsyncIterator[probe_service_pb2.StreamClassifyWindowsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[probe_service_pb2.StreamClassifyWindowsResponse]:
        """Each window is diagnosed concurrently, so one stream's windows share batches."""
        answers: asyncio.Queue[probe_service_pb2.StreamClassifyWindowsResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_STREAM)
        pending: set[asyncio.Task[None]] = set()

        async def answer(request: probe_service_pb2.StreamClassifyWindowsRequest) -> None:
            response = probe_service_pb2.StreamClassifyWindowsResponse(sequence=request.sequence)
            try:
                response.diagnosis.CopyFrom(
                    await self._classify(
                        request.network, request.node, request.window, request.top_k, context
                    )
                )
            except Exception as exc:
                code, message = status_for(exc)
                log_error("StreamClassifyWindows", code, message, exc)
                response.error.code = code.value[0]
                response.error.message = message
            finally:
                slots.release()
            await answers.put(response)

        async def read_all() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.gather(*list(pending), return_exceptions=True)
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read_all())
        with self.telemetry.tracer.start_as_current_span("faultprint.v1/StreamClassifyWindows"):
            try:
                while (response := await answers.get()) is not None:
                    yield response
            finally:
                reader.cancel()
                for task in list(pending):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader


def _require_network(state: ServingState, network: str) -> NetworkIndex:
    index = state.index.get(network)
    if index is None:
        raise NotFound(
            f"network {network!r} has no reference cases; enrol some with "
            "ReferenceCaseService.CreateReferenceCase"
        )
    return index


def _case_proto(case: StoredCase) -> reference_case_service_pb2.ReferenceCase:
    created = Timestamp()
    created.FromNanoseconds(int(case.create_time_unix_s * 1e9))
    return reference_case_service_pb2.ReferenceCase(
        network=case.network,
        reference_case_id=case.case_id,
        label=case.label,
        description=case.description,
        window_count=case.window_count,
        create_time=created,
    )


class ReferenceCaseServicer(reference_case_service_pb2_grpc.ReferenceCaseServiceServicer):
    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.host = encoder.host
        self.telemetry = encoder.telemetry

    @unary_rpc("CreateReferenceCase")
    async def CreateReferenceCase(
        self,
        request: reference_case_service_pb2.CreateReferenceCaseRequest,
        context: grpc.aio.ServicerContext,
    ) -> reference_case_service_pb2.CreateReferenceCaseResponse:
        check_id("network", request.network)
        check_id("label", request.label)
        if request.reference_case_id:
            check_id("reference_case_id", request.reference_case_id)
        if not 1 <= len(request.windows) <= MAX_WINDOWS_PER_CASE:
            raise InvalidArgument(
                f"a reference case needs 1 to {MAX_WINDOWS_PER_CASE} example windows, "
                f"got {len(request.windows)}"
            )
        windows = np.stack([self.encoder.decode(w) for w in request.windows])
        case = await self.host.enrol(
            request.network, request.reference_case_id, request.label, request.description, windows
        )
        log.info("enrolled %s/%s (%s, %d windows)", case.network, case.case_id, case.label, case.window_count)
        return reference_case_service_pb2.CreateReferenceCaseResponse(reference_case=_case_proto(case))

    @unary_rpc("GetReferenceCase")
    async def GetReferenceCase(
        self, request: reference_case_service_pb2.GetReferenceCaseRequest, context: grpc.aio.ServicerContext
    ) -> reference_case_service_pb2.GetReferenceCaseResponse:
        case = await self.host.store.get(request.network, request.reference_case_id)
        response = reference_case_service_pb2.GetReferenceCaseResponse(reference_case=_case_proto(case))
        if request.include_windows:
            for values in await self.host.store.get_windows(case):
                response.windows.append(
                    window_pb2.Window(
                        steps=case.steps, features=case.features, packed_values=values.tobytes()
                    )
                )
        return response

    @unary_rpc("ListReferenceCases")
    async def ListReferenceCases(
        self, request: reference_case_service_pb2.ListReferenceCasesRequest, context: grpc.aio.ServicerContext
    ) -> reference_case_service_pb2.ListReferenceCasesResponse:
        size = min(request.page_size or 100, 1000)
        cases = [
            c for c in await self.host.store.list_cases(request.network) if c.case_id > request.page_token
        ]
        page = cases[:size]
        return reference_case_service_pb2.ListReferenceCasesResponse(
            reference_cases=[_case_proto(c) for c in page],
            next_page_token=page[-1].case_id if len(cases) > size else "",
        )

    @unary_rpc("DeleteReferenceCase")
    async def DeleteReferenceCase(
        self,
        request: reference_case_service_pb2.DeleteReferenceCaseRequest,
        context: grpc.aio.ServicerContext,
    ) -> reference_case_service_pb2.DeleteReferenceCaseResponse:
        await self.host.remove(request.network, request.reference_case_id, stored=False)
        log.info("deleted %s/%s", request.network, request.reference_case_id)
        return reference_case_service_pb2.DeleteReferenceCaseResponse()


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self, host: ModelHost, client: aioredis.Redis, layout: RedisLayout, telemetry: ServerTelemetry
    ) -> None:
        self.host = host
        self.redis = client
        self.layout = layout
        self.telemetry = telemetry

    @unary_rpc("GetModelInfo")
    async def GetModelInfo(
        self, request: model_service_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.GetModelInfoResponse:
        meta = self.host.require().runner.metadata
        return model_service_pb2.GetModelInfoResponse(
            model_version=meta.version,
            steps=meta.steps,
            features=meta.features,
            embedding_size=meta.embedding_size,
            distance_threshold=meta.distance_threshold,
            feature_names=list(meta.feature_names),
        )

    @unary_rpc("GetNodeDiagnosis")
    async def GetNodeDiagnosis(
        self, request: model_service_pb2.GetNodeDiagnosisRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.GetNodeDiagnosisResponse:
        raw = cast(
            dict[bytes, bytes], await self.redis.hgetall(self.layout.node(request.network, request.node))
        )
        if not raw:
            raise NotFound(f"no diagnosis recorded for node {request.node!r} in network {request.network!r}")
        recorded = Timestamp()
        recorded.FromMilliseconds(int(raw[b"record_time_unix_ms"]))
        return model_service_pb2.GetNodeDiagnosisResponse(
            node_diagnosis=model_service_pb2.NodeDiagnosis(
                network=request.network,
                node=request.node,
                label=raw[b"label"].decode(),
                verdict=_VERDICTS[raw[b"verdict"].decode()],
                distance=float(raw[b"distance"]),
                model_version=raw[b"model_version"].decode(),
                embedding=np.frombuffer(raw[b"embedding"], "<f4").tolist(),
                record_time=recorded,
            )
        )
