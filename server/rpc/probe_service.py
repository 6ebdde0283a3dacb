"""ProbeService: probes embed and classify windows, one per call or over a long-lived stream."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from faultprint.server.batching.session import (
    Embedded,
    Encoder,
    EncodeRequest,
    fill_diagnosis,
    require_network,
)
from faultprint.server.monitoring.monitor import NodeMonitor, Receipt
from faultprint.server.references.node_state import NodeStateWriter
from faultprint.server.references.store import check_id
from faultprint.server.rpc.errors import InvalidArgument, status_for
from faultprint.server.rpc.health import PROBE_SERVICE
from faultprint.server.rpc.requests import Undecodable
from faultprint.server.rpc.unary import log_error, refuse, unary_rpc
from faultprint.server.security.access import refusal
from faultprint.v1 import diagnosis_pb2, probe_service_pb2, probe_service_pb2_grpc

# Most neighbours a request may ask for.
MAX_TOP_K = 50

# Unary and stream classify requests carry the same fields.
ClassifyRequest: TypeAlias = (
    probe_service_pb2.ClassifyWindowRequest | probe_service_pb2.StreamClassifyWindowsRequest
)


class ProbeServicer(probe_service_pb2_grpc.ProbeServiceServicer):
    service_name = PROBE_SERVICE.full_name

    def __init__(
        self,
        encoder: Encoder,
        writer: NodeStateWriter,
        monitor: NodeMonitor,
        stream_max_unanswered: int = 512,
    ) -> None:
        self.encoder = encoder
        self.monitor = monitor
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
        network = check_id("network", request.network, optional=True) or None
        state = self.encoder.host.require()
        if state.runner.metadata.network_baseline:
            if network is None:
                raise InvalidArgument(
                    f"model {state.version} reads each window against its network's baseline: "
                    "name the network",
                    field="network",
                )
            require_network(state, network)
        embedded = await self.encoder.enqueue(
            EncodeRequest(values, network, match=False), None, self.encoder.deadline(context)
        )
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
        if (denied := refusal(request.network)) is not None:
            raise denied
        if request.top_k > MAX_TOP_K:
            raise InvalidArgument(
                f"top_k is {request.top_k}, at most {MAX_TOP_K} neighbours can be returned", field="top_k"
            )
        values = self.encoder.decode(request.window)
        require_network(self.encoder.host.require(), request.network)
        return self.encoder.enqueue(
            EncodeRequest(values, request.network, request.top_k), (request.network, request.node), deadline
        )

    def _diagnose(self, request: ClassifyRequest, embedded: Embedded, into: diagnosis_pb2.Diagnosis) -> None:
        """Writes the batch's match of an embedding (cases of the same version) into a response."""
        match = embedded.match
        if match is None:  # the network had no cases when the batch ran (or lost them since)
            index = require_network(embedded.state, request.network)
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
            await refuse("StreamClassifyWindows", context, refusal[0])

    async def StreamMinutes(
        self,
        request_iterator: AsyncIterator[probe_service_pb2.StreamMinutesRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Each request's minutes go to the node monitor; its acknowledgement is written once the
        monitor has stored them in Redis. Acknowledgements may come in another order than the
        requests. A stream holding stream_max_unacknowledged_minutes is not read until some are
        acknowledged. Bytes that are not a valid request, or a server that cannot take minutes
        (no model yet), end the stream after the acknowledgements already due."""
        limit = self.monitor.options.stream_max_unacknowledged_minutes
        stream = object()  # this stream's key in the batch scheduler
        acks: asyncio.Queue[Receipt | None] = asyncio.Queue()
        held = [0]
        room = asyncio.Event()
        room.set()
        failure: list[Exception] = []
        outstanding: set[int] = set()
        settled = asyncio.Event()

        def deliver(receipt: Receipt) -> None:
            outstanding.discard(id(receipt))
            acks.put_nowait(receipt)
            if not outstanding:
                settled.set()

        async def read_all() -> None:
            try:
                while (request := await context.read()) is not grpc.aio.EOF:
                    if isinstance(request, Undecodable):
                        failure.append(request.error())
                        break
                    while held[0] >= limit:
                        room.clear()
                        await room.wait()
                    receipt = Receipt(
                        probe_service_pb2.StreamMinutesResponse(sequence=request.sequence),
                        deliver,
                        size=max(1, len(request.minutes)),
                        stream=stream,
                    )
                    held[0] += receipt.size
                    outstanding.add(id(receipt))
                    try:
                        await self.monitor.take(request, receipt)
                    except Exception as exc:
                        outstanding.discard(id(receipt))
                        failure.append(exc)
                        break
                if outstanding:
                    settled.clear()
                    await settled.wait()
            finally:
                acks.put_nowait(None)

        reader = asyncio.create_task(read_all())
        try:
            while (done := await acks.get()) is not None:
                await context.write(done.response)
                held[0] -= done.size
                room.set()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if failure:
            await refuse("StreamMinutes", context, failure[0])

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
        raise InvalidArgument(
            f"timeout is {timeout_s:.3f} s; a window's timeout cannot be negative", field="timeout"
        )
    own = asyncio.get_running_loop().time() + timeout_s
    return own if stream_deadline is None else min(own, stream_deadline)


def _stream_error(response: probe_service_pb2.StreamClassifyWindowsResponse, exc: BaseException) -> None:
    """Puts an error into a stream answer (the stream stays open) and logs it."""
    code, message = status_for(exc)
    log_error("StreamClassifyWindows", code, message, exc)
    response.error.code = code.value[0]
    response.error.message = message
