"""The three faultprint.v1 services: probes (embed, classify, stream), reference cases, model information."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias, cast

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
from server.request_codec import Undecodable
from server.rpc import log_error, unary_rpc
from server.serving_state import ModelHost, ServingState
from server.shadow import Shadow
from server.telemetry import ServerTelemetry
from server.window_codec import decode_window

log = logging.getLogger(__name__)

# Most neighbours a request may ask for, and most example windows in one reference case.
MAX_TOP_K = 50
MAX_WINDOWS_PER_CASE = 64
# Longest description a reference case may carry, in characters: every case's description
# travels in each ListReferenceCases page, which must stay well under the message limit.
MAX_DESCRIPTION_CHARS = 2048

_VERDICTS = {
    "normal": diagnosis_pb2.VERDICT_NORMAL,
    "fault": diagnosis_pb2.VERDICT_FAULT,
    "unknown": diagnosis_pb2.VERDICT_UNKNOWN,
}


# Unary and stream classify requests carry the same fields.
ClassifyRequest: TypeAlias = (
    probe_service_pb2.ClassifyWindowRequest | probe_service_pb2.StreamClassifyWindowsRequest
)


@dataclass(frozen=True, slots=True)
class EncodeRequest:
    """One window queued for the encoder, and what to match its embedding against."""

    values: np.ndarray
    # The network whose reference cases the embedding is matched against (None: embed only).
    network: str | None = None
    # Neighbours to return; 0 means the server's default.
    top_k: int = 0


@dataclass(frozen=True, slots=True)
class Embedded:
    """A window's embedding, its match (when asked for) and the serving state that produced both."""

    embedding: np.ndarray
    state: ServingState
    # None when embedding only, or when the network had no cases in this state.
    match: Match | None = None


class Encoder:
    """The batched encoder path: validation, the batch scheduler, and the batch function."""

    def __init__(
        self, host: ModelHost, telemetry: ServerTelemetry, max_batch_size: int, default_top_k: int = 3
    ) -> None:
        self.host = host
        self.telemetry = telemetry
        self.default_top_k = default_top_k
        self.scheduler: BatchScheduler[EncodeRequest, Embedded] | None = None
        # Classifies a sample of windows with the candidate model, if the registry names one.
        self.shadow: Shadow | None = None
        self._buffers = [BatchBuffers(max_batch_size) for _ in host.devices]
        self._device_attributes = [{"device": name} for name in host.devices]

    def decode(self, window: window_pb2.Window) -> np.ndarray:
        meta = self.host.require().runner.metadata
        return decode_window(window, meta.steps, meta.features)

    @staticmethod
    def deadline(context: grpc.aio.ServicerContext) -> float | None:
        """The call's deadline on the loop's clock (None when the caller set none)."""
        remaining = context.time_remaining()
        return None if remaining is None else asyncio.get_running_loop().time() + remaining

    def enqueue(
        self, request: EncodeRequest, key: object, deadline: float | None
    ) -> asyncio.Future[Embedded]:
        assert self.scheduler is not None
        return self.scheduler.enqueue(request, key=key, deadline=deadline)

    async def run_batch(self, batch: Batch[EncodeRequest]) -> BatchRun[Embedded]:
        """Embeds and matches one batch on its device under one model version (read once, here).

        The windows are copied into the device's reusable buffer on the event loop while
        the device may still be computing the previous batch; on a GPU the copy to the
        device is staged on its own thread, so it too overlaps the running batch. The
        whole batch is matched against the reference index in one set of array operations
        on the device's thread.
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
            requests = batch.payloads
            buffer = buffers.acquire(requests[0].values.shape)
            try:
                inputs = assemble([r.values for r in requests], batch.padded_size, out=buffer)
                if runner.stages_inputs:
                    inputs = await loop.run_in_executor(self.host.stagers[batch.device], runner.stage, inputs)
                outputs, matches, compute_s = await loop.run_in_executor(
                    self.host.executors[batch.device], self._embed_and_match, state, runner, inputs, requests
                )
            finally:
                buffers.release(buffer)
        self.telemetry.batch_compute_ms.record(compute_s * 1000, self._device_attributes[batch.device])
        if self.shadow is not None:
            self.shadow.offer(requests, matches)
        rows = split(outputs, len(requests))
        return BatchRun([Embedded(row, state, m) for row, m in zip(rows, matches, strict=True)], compute_s)

    def _embed_and_match(
        self, state: ServingState, runner: ModelRunner, inputs: object, requests: list[EncodeRequest]
    ) -> tuple[np.ndarray, list[Match | None], float]:
        started = time.perf_counter()
        outputs = runner.embed(inputs)
        compute_s = time.perf_counter() - started
        return outputs, match_batch(state, outputs, requests, self.default_top_k), compute_s


def match_batch(
    state: ServingState, embeddings: np.ndarray, requests: list[EncodeRequest], default_top_k: int
) -> list[Match | None]:
    """Each request's match, computed network by network over the whole batch."""
    matches: list[Match | None] = [None] * len(requests)
    rows_by_network: dict[str, list[int]] = {}
    for row, request in enumerate(requests):
        if request.network is not None:
            rows_by_network.setdefault(request.network, []).append(row)
    threshold = state.runner.metadata.distance_threshold
    for network, rows in rows_by_network.items():
        index = state.index.get(network)
        if index is None:
            continue  # answered NOT_FOUND when the response is built
        top_ks = [requests[row].top_k or default_top_k for row in rows]
        for row, match in zip(rows, index.match_many(embeddings[rows], top_ks, threshold), strict=True):
            matches[row] = match
    return matches


def fill_diagnosis(
    into: diagnosis_pb2.Diagnosis, network: str, node: str, match: Match, state: ServingState
) -> None:
    """Writes a match into a response's Diagnosis in place (no intermediate message to copy)."""
    into.network = network
    into.node = node
    into.label = match.label
    into.verdict = _VERDICTS[match.verdict]
    into.distance = match.distance
    into.model_version = state.version
    into.distance_threshold = state.runner.metadata.distance_threshold
    for n in match.neighbours:
        into.neighbours.add(reference_case_id=n.case_id, label=n.label, distance=n.distance)
    if match.margin is not None:
        into.margin = match.margin


class ProbeServicer(probe_service_pb2_grpc.ProbeServiceServicer):
    def __init__(self, encoder: Encoder, writer: NodeStateWriter, stream_max_unanswered: int = 512) -> None:
        self.encoder = encoder
        self.telemetry = encoder.telemetry
        self.writer = writer
        # Windows one stream may hold between reading them and writing their answers.
        self.stream_max_unanswered = stream_max_unanswered
        # Windows held so far by every stream together (read, answer not yet written), and
        # windows read from streams since start.
        self.unanswered = 0
        self.stream_windows_read = 0

    @unary_rpc("EmbedWindow")
    async def EmbedWindow(
        self, request: probe_service_pb2.EmbedWindowRequest, context: grpc.aio.ServicerContext
    ) -> probe_service_pb2.EmbedWindowResponse:
        values = self.encoder.decode(request.window)
        embedded = await self.encoder.enqueue(EncodeRequest(values), None, self.encoder.deadline(context))
        return probe_service_pb2.EmbedWindowResponse(
            embedding=embedded.embedding.tolist(), model_version=embedded.state.version
        )

    @unary_rpc("ClassifyWindow")
    async def ClassifyWindow(
        self, request: probe_service_pb2.ClassifyWindowRequest, context: grpc.aio.ServicerContext
    ) -> probe_service_pb2.ClassifyWindowResponse:
        embedded = await self._admit(request, self.encoder.deadline(context))
        response = probe_service_pb2.ClassifyWindowResponse()
        self._diagnose(request, embedded, response.diagnosis)
        return response

    def _admit(self, request: ClassifyRequest, deadline: float | None) -> asyncio.Future[Embedded]:
        """Checks a classify request and queues its window; the future resolves to its embedding."""
        check_id("network", request.network)
        check_id("node", request.node)
        if request.top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k is {request.top_k}, at most {MAX_TOP_K} neighbours can be returned")
        values = self.encoder.decode(request.window)
        _require_network(self.encoder.host.require(), request.network)
        return self.encoder.enqueue(
            EncodeRequest(values, request.network, request.top_k), (request.network, request.node), deadline
        )

    def _diagnose(self, request: ClassifyRequest, embedded: Embedded, into: diagnosis_pb2.Diagnosis) -> None:
        """Writes the batch's match of an embedding (cases of the same version) into a response."""
        match = embedded.match
        if match is None:  # the network had no cases when the batch ran (or lost them since)
            index = _require_network(embedded.state, request.network)
            threshold = embedded.state.runner.metadata.distance_threshold
            match = index.match(embedded.embedding, request.top_k or self.encoder.default_top_k, threshold)
        fill_diagnosis(into, request.network, request.node, match, embedded.state)
        self.writer.record(into, embedded.embedding)

    async def StreamClassifyWindows(
        self,
        request_iterator: AsyncIterator[probe_service_pb2.StreamClassifyWindowsRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Windows share batches with every other caller; each is answered when its batch is done.

        The hot path has no task per window: the reader queues each window and a
        done-callback queues its answer, so a busy stream costs one read, one queue
        entry and one write per window. Requests are read with context.read() rather than
        through request_iterator, and answers go out with context.write().

        A window holds one of the stream's slots from when it is read until its answer
        has been written (gRPC's write waits on the caller's flow control), so a caller
        that stops reading its answers stops the server reading its windows once
        stream_max_unanswered are held. Bytes that are not a valid request end the stream
        with INVALID_ARGUMENT, after the answers of the windows read before them.
        """
        deadline = self.encoder.deadline(context)
        answers: asyncio.Queue[probe_service_pb2.StreamClassifyWindowsResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.stream_max_unanswered)
        pending: set[asyncio.Future[Embedded]] = set()
        refusal: list[InvalidArgument] = []

        def answer(
            request: probe_service_pb2.StreamClassifyWindowsRequest, future: asyncio.Future[Embedded]
        ) -> None:
            pending.discard(future)
            if future.cancelled():
                self._release(slots)
                return
            response = probe_service_pb2.StreamClassifyWindowsResponse(sequence=request.sequence)
            try:
                self._diagnose(request, future.result(), response.diagnosis)
            except Exception as exc:
                _stream_error(response, exc)
            answers.put_nowait(response)

        async def read_all() -> None:
            try:
                while (request := await context.read()) is not grpc.aio.EOF:
                    if isinstance(request, Undecodable):
                        refusal.append(request.error())
                        break
                    await slots.acquire()
                    self.unanswered += 1
                    self.stream_windows_read += 1
                    try:
                        future = self._admit(request, _window_deadline(request, deadline))
                    except Exception as exc:
                        refused = probe_service_pb2.StreamClassifyWindowsResponse(sequence=request.sequence)
                        _stream_error(refused, exc)
                        answers.put_nowait(refused)
                        continue
                    pending.add(future)
                    future.add_done_callback(functools.partial(answer, request))
                while pending:
                    await asyncio.wait(set(pending))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read_all())
        with self.telemetry.tracer.start_as_current_span("faultprint.v1/StreamClassifyWindows"):
            try:
                while (response := await answers.get()) is not None:
                    await context.write(response)
                    self._release(slots)
            finally:
                reader.cancel()
                for future in list(pending):
                    future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                while not answers.empty():  # answers the caller will never read
                    if answers.get_nowait() is not None:
                        self._release(slots)
            if refusal:
                code, message = status_for(refusal[0])
                log_error("StreamClassifyWindows", code, message, refusal[0])
                await context.abort(code, message)

    def _release(self, slots: asyncio.Semaphore) -> None:
        """A window's answer is written, or will never be: its slot is free."""
        slots.release()
        self.unanswered -= 1


def _window_deadline(
    request: probe_service_pb2.StreamClassifyWindowsRequest, stream_deadline: float | None
) -> float | None:
    """A streamed window's deadline: its own timeout from now, within the stream's deadline."""
    if not request.HasField("timeout"):
        return stream_deadline
    timeout_s = request.timeout.seconds + request.timeout.nanos * 1e-9
    if timeout_s < 0:
        raise InvalidArgument(f"timeout is {timeout_s:.3f} s; a window's timeout cannot be negative")
    own = asyncio.get_running_loop().time() + timeout_s
    return own if stream_deadline is None else min(own, stream_deadline)


def _stream_error(response: probe_service_pb2.StreamClassifyWindowsResponse, exc: BaseException) -> None:
    """Puts an error into a stream answer (the stream stays open) and logs it."""
    code, message = status_for(exc)
    log_error("StreamClassifyWindows", code, message, exc)
    response.error.code = code.value[0]
    response.error.message = message


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
        if len(request.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(
                f"description has {len(request.description)} characters, at most {MAX_DESCRIPTION_CHARS}"
            )
        if not 1 <= len(request.windows) <= MAX_WINDOWS_PER_CASE:
            raise InvalidArgument(
                f"a reference case needs 1 to {MAX_WINDOWS_PER_CASE} example windows, "
                f"got {len(request.windows)}"
            )
        windows = np.stack([self.encoder.decode(w) for w in request.windows])
        if request.request_id:
            check_id("request_id", request.request_id)
        case = await self.host.enrol(
            request.network, request.reference_case_id, request.label, request.description, windows,
            request.request_id,
        )  # fmt: skip
        log.info("enrolled %s/%s (%s, %d windows)", case.network, case.case_id, case.label, case.window_count)
        return reference_case_service_pb2.CreateReferenceCaseResponse(reference_case=_case_proto(case))

    @unary_rpc("GetReferenceCase")
    async def GetReferenceCase(
        self, request: reference_case_service_pb2.GetReferenceCaseRequest, context: grpc.aio.ServicerContext
    ) -> reference_case_service_pb2.GetReferenceCaseResponse:
        check_id("network", request.network)
        check_id("reference_case_id", request.reference_case_id)
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
        check_id("network", request.network)
        if request.page_token:
            check_id("page_token", request.page_token)
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
        check_id("network", request.network)
        check_id("reference_case_id", request.reference_case_id)
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
        candidate = self.host.candidate
        return model_service_pb2.GetModelInfoResponse(
            candidate_version=candidate.version if candidate else "",
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
        check_id("network", request.network)
        check_id("node", request.node)
        raw = cast(bytes | None, await self.redis.get(self.layout.node(request.network, request.node)))
        if raw is None:
            raise NotFound(f"no diagnosis recorded for node {request.node!r} in network {request.network!r}")
        return model_service_pb2.GetNodeDiagnosisResponse(
            node_diagnosis=model_service_pb2.NodeDiagnosis.FromString(raw)
        )
