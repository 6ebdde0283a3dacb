"""Typed clients for faultprint.v1, sync and asyncio, over one gRPC channel each.

Windows are sent on the packed float32 fast path. Errors surface as grpc.RpcError
(grpc.aio.AioRpcError for the async client) with the server's status and message.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, cast

import grpc
import numpy as np

from faultprint.client.channels import ChannelSecurity, aio_channel, channel
from faultprint.client.throttle import (
    OVERLOAD_CODE_VALUES,
    THROTTLED_DETAILS,
    AdaptiveThrottle,
    ThrottleOptions,
    throttled_error,
)
from faultprint.v1 import (
    incident_service_pb2,
    incident_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    probe_service_pb2,
    probe_service_pb2_grpc,
    reference_case_service_pb2,
    reference_case_service_pb2_grpc,
    window_pb2,
)
from faultprint.v1.diagnosis_pb2 import Diagnosis
from faultprint.v1.model_service_pb2 import GetModelInfoResponse as ModelInfo
from faultprint.v1.reference_case_service_pb2 import ReferenceCase

_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

# Matches the server's default message limit (16 MiB); a reference case may carry many windows.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def channel_options(own_connection: bool) -> list[tuple[str, int]]:
    """gRPC shares one connection among a process's channels to the same server; with
    own_connection, the channel opens its own, as a separate probe would. A server run
    with several workers spreads connections, not calls, over them."""
    return [*_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)] if own_connection else _CHANNEL_OPTIONS


WindowLike: TypeAlias = np.ndarray | window_pb2.Window


def encode_window(values: WindowLike) -> window_pb2.Window:
    """A (steps, features) array as a Window with packed little-endian float32 values.

    A Window passes through unchanged: a probe that resends a window, or a load
    generator, can encode it once.
    """
    if isinstance(values, window_pb2.Window):
        return values
    array = np.ascontiguousarray(values, dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"a window is 2-D (steps, features), got shape {array.shape}")
    return window_pb2.Window(steps=array.shape[0], features=array.shape[1], packed_values=array.tobytes())


@dataclass(frozen=True)
class StreamItem:
    """One window to diagnose on a stream."""

    network: str
    node: str
    window: WindowLike
    sequence: int = 0
    top_k: int = 0
    # How long to wait for this window's answer; None means the stream's deadline.
    timeout_s: float | None = None


# Attempts of one enrolment when the server answers UNAVAILABLE or DEADLINE_EXCEEDED,
# and the pause before the first retry (doubling after each), in seconds. Every attempt
# carries the same request id, so the server creates the case at most once.
CREATE_ATTEMPTS = 3
CREATE_RETRY_PAUSE_S = 0.25
_RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _create_request(
    network: str, label: str, windows: Sequence[np.ndarray], description: str, case_id: str,
    request_id: str | None,
) -> reference_case_service_pb2.CreateReferenceCaseRequest:  # fmt: skip
    return reference_case_service_pb2.CreateReferenceCaseRequest(
        network=network,
        label=label,
        description=description,
        reference_case_id=case_id,
        windows=[encode_window(w) for w in windows],
        request_id=request_id or uuid.uuid4().hex,
    )


def _retry_pause_s(error: grpc.RpcError, attempt: int) -> float | None:
    """The pause before retrying an enrolment after error, or None to give up."""
    if attempt + 1 >= CREATE_ATTEMPTS or error.code() not in _RETRIED_CODES:
        return None
    return CREATE_RETRY_PAUSE_S * 2**attempt


def _classify_request(
    network: str, node: str, window: WindowLike, top_k: int
) -> probe_service_pb2.ClassifyWindowRequest:
    return probe_service_pb2.ClassifyWindowRequest(
        network=network, node=node, window=encode_window(window), top_k=top_k
    )


def _traffic_request(
    network: str, windows: Sequence[np.ndarray], replace: bool
) -> reference_case_service_pb2.AddBaselineTrafficRequest:
    return reference_case_service_pb2.AddBaselineTrafficRequest(
        network=network, windows=[encode_window(w) for w in windows], replace=replace
    )


def minutes_request(
    sequence: int, network: str, nodes: Sequence[str], minutes: Sequence[int], values: np.ndarray
) -> probe_service_pb2.StreamMinutesRequest:
    """A StreamMinutes request: one minute per node, values (len(nodes), features) as float32."""
    packed = np.ascontiguousarray(values, dtype="<f4")
    row_bytes = packed.shape[1] * 4
    raw = packed.tobytes()
    request = probe_service_pb2.StreamMinutesRequest(sequence=sequence)
    for i, (node, minute) in enumerate(zip(nodes, minutes, strict=True)):
        request.minutes.add(
            network=network,
            node=node,
            minute=int(minute),
            packed_values=raw[i * row_bytes : (i + 1) * row_bytes],
        )
    return request


def _get_request(network: str, case_id: str) -> reference_case_service_pb2.GetReferenceCaseRequest:
    return reference_case_service_pb2.GetReferenceCaseRequest(network=network, reference_case_id=case_id)


def _delete_request(network: str, case_id: str) -> reference_case_service_pb2.DeleteReferenceCaseRequest:
    return reference_case_service_pb2.DeleteReferenceCaseRequest(network=network, reference_case_id=case_id)


def _stream_request(item: StreamItem) -> probe_service_pb2.StreamClassifyWindowsRequest:
    request = probe_service_pb2.StreamClassifyWindowsRequest(
        sequence=item.sequence,
        network=item.network,
        node=item.node,
        window=encode_window(item.window),
        top_k=item.top_k,
    )
    if item.timeout_s is not None:
        request.timeout.FromNanoseconds(int(item.timeout_s * 1e9))
    return request


class _Stubs:
    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.channel = channel
        self.probe = probe_service_pb2_grpc.ProbeServiceStub(channel)
        self.references = reference_case_service_pb2_grpc.ReferenceCaseServiceStub(channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(channel)
        self.incidents = incident_service_pb2_grpc.IncidentServiceStub(channel)


class FaultprintClient(_Stubs):
    """Blocking client. ``with FaultprintClient("127.0.0.1:50051") as fp: fp.classify(...)``."""

    def __init__(
        self,
        target: str,
        timeout_s: float = 30.0,
        own_connection: bool = False,
        security: ChannelSecurity | None = None,
    ) -> None:
        super().__init__(channel(target, channel_options(own_connection), security))
        self.timeout_s = timeout_s

    def __enter__(self) -> FaultprintClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def embed(self, window: np.ndarray, network: str = "") -> tuple[np.ndarray, str]:
        """(embedding, model version); network is needed by a model that reads network baselines."""
        response = self.probe.EmbedWindow(
            probe_service_pb2.EmbedWindowRequest(window=encode_window(window), network=network),
            timeout=self.timeout_s,
        )
        return np.asarray(response.embedding, np.float32), response.model_version

    def classify(
        self, network: str, node: str, window: WindowLike, top_k: int = 0, timeout_s: float | None = None
    ) -> Diagnosis:
        """The node's diagnosis; timeout_s (default: the client's) is the call's deadline."""
        request = _classify_request(network, node, window, top_k)
        return self.probe.ClassifyWindow(request, timeout=timeout_s or self.timeout_s).diagnosis

    def classify_stream(
        self, items: Iterable[StreamItem]
    ) -> Iterable[probe_service_pb2.StreamClassifyWindowsResponse]:
        return self.probe.StreamClassifyWindows(_stream_request(i) for i in items)

    def create_reference_case(
        self,
        network: str,
        label: str,
        windows: Sequence[np.ndarray],
        description: str = "",
        case_id: str = "",
        request_id: str | None = None,
    ) -> ReferenceCase:
        """Enrols a case, retrying UNAVAILABLE and DEADLINE_EXCEEDED under one request id."""
        request = _create_request(network, label, windows, description, case_id, request_id)
        for attempt in itertools.count():
            try:
                return self.references.CreateReferenceCase(request, timeout=self.timeout_s).reference_case
            except grpc.RpcError as error:
                pause_s = _retry_pause_s(error, attempt)
                if pause_s is None:
                    raise
                time.sleep(pause_s)
        raise AssertionError("unreachable")

    def get_reference_case(self, network: str, case_id: str) -> ReferenceCase:
        request = _get_request(network, case_id)
        return self.references.GetReferenceCase(request, timeout=self.timeout_s).reference_case

    def list_reference_cases(self, network: str) -> list[ReferenceCase]:
        cases: list[ReferenceCase] = []
        token = ""
        while True:
            page = self.references.ListReferenceCases(
                reference_case_service_pb2.ListReferenceCasesRequest(network=network, page_token=token),
                timeout=self.timeout_s,
            )
            cases.extend(page.reference_cases)
            token = page.next_page_token
            if not token:
                return cases

    def delete_reference_case(self, network: str, case_id: str) -> None:
        request = _delete_request(network, case_id)
        self.references.DeleteReferenceCase(request, timeout=self.timeout_s)

    def network_baseline(self, network: str) -> reference_case_service_pb2.NetworkBaseline:
        """The baseline the serving model reads the network's windows against."""
        request = reference_case_service_pb2.GetNetworkBaselineRequest(network=network)
        return self.references.GetNetworkBaseline(request, timeout=self.timeout_s).baseline

    def add_baseline_traffic(self, network: str, windows: Sequence[np.ndarray], replace: bool = False) -> int:
        """Adds unlabelled windows of the network's traffic to its baseline; returns the batches kept."""
        request = _traffic_request(network, windows, replace)
        return self.references.AddBaselineTraffic(request, timeout=self.timeout_s).stored_batches

    def model_info(self) -> ModelInfo:
        return self.model.GetModelInfo(model_service_pb2.GetModelInfoRequest(), timeout=self.timeout_s)

    def open_incidents(self, network: str) -> list[incident_service_pb2.Incident]:
        request = incident_service_pb2.ListOpenIncidentsRequest(network=network)
        return list(self.incidents.ListOpenIncidents(request, timeout=self.timeout_s).incidents)

    def node_incidents(
        self, network: str, node: str, page_size: int = 0
    ) -> list[incident_service_pb2.Incident]:
        request = incident_service_pb2.ListNodeIncidentsRequest(
            network=network, node=node, page_size=page_size
        )
        return list(self.incidents.ListNodeIncidents(request, timeout=self.timeout_s).incidents)

    def acknowledge_incident(
        self, network: str, incident_id: str, operator: str, note: str = ""
    ) -> incident_service_pb2.Incident:
        request = incident_service_pb2.AcknowledgeIncidentRequest(
            network=network, incident_id=incident_id, operator=operator, note=note
        )
        return self.incidents.AcknowledgeIncident(request, timeout=self.timeout_s).incident

    def node_condition(self, network: str, node: str) -> incident_service_pb2.NodeCondition:
        request = incident_service_pb2.GetNodeConditionRequest(network=network, node=node)
        return self.incidents.GetNodeCondition(request, timeout=self.timeout_s).condition

    def node_diagnosis(self, network: str, node: str) -> model_service_pb2.NodeDiagnosis:
        request = model_service_pb2.GetNodeDiagnosisRequest(network=network, node=node)
        return self.model.GetNodeDiagnosis(request, timeout=self.timeout_s).node_diagnosis


class ProbeStream:
    """One open StreamClassifyWindows call, written and read explicitly.

    Answers carry the sequence number of their window and may come back in another
    order than the windows went out; a bad window gets an answer with an error set,
    and the stream stays open. With a throttle, a window refused locally gets its
    RESOURCE_EXHAUSTED answer from the client itself (see client/throttle.py).
    """

    def __init__(self, call: grpc.aio.StreamStreamCall, throttle: AdaptiveThrottle | None = None) -> None:
        self._call = call
        self._throttle = throttle
        self._local: deque[probe_service_pb2.StreamClassifyWindowsResponse] = deque()
        self._local_ready = asyncio.Event()
        self._read: asyncio.Future[object] | None = None

    async def send(self, item: StreamItem) -> None:
        if self._throttle is not None and not self._throttle.admit():
            error = probe_service_pb2.StreamError(code=_RESOURCE_EXHAUSTED, message=THROTTLED_DETAILS)
            answer = probe_service_pb2.StreamClassifyWindowsResponse(sequence=item.sequence, error=error)
            self._local.append(answer)
            self._local_ready.set()
            return
        await self._call.write(_stream_request(item))

    async def receive(self) -> probe_service_pb2.StreamClassifyWindowsResponse:
        """The next answer; raises EOFError when the server has closed the stream."""
        if self._throttle is None:
            return _answer(await self._call.read())
        while True:
            self._local_ready.clear()
            if self._local:
                return self._local.popleft()
            if self._read is None:
                self._read = asyncio.ensure_future(self._call.read())
            local = asyncio.ensure_future(self._local_ready.wait())
            await asyncio.wait((self._read, local), return_when=asyncio.FIRST_COMPLETED)
            local.cancel()
            if self._read.done():
                read, self._read = self._read, None
                response = _answer(read.result())
                error = response.error.code if response.HasField("error") else 0
                self._throttle.record(error not in OVERLOAD_CODE_VALUES)
                return response

    async def close(self) -> None:
        """Says no more windows will come; answers still owed arrive before the stream ends."""
        await self._call.done_writing()

    def cancel(self) -> None:
        if self._read is not None:
            self._read.cancel()
        self._call.cancel()


def _answer(response: object) -> probe_service_pb2.StreamClassifyWindowsResponse:
    if response is grpc.aio.EOF:
        raise EOFError("the server closed the stream")
    return cast(probe_service_pb2.StreamClassifyWindowsResponse, response)


class AsyncFaultprintClient(_Stubs):
    """asyncio client. ``async with AsyncFaultprintClient(target) as fp: await fp.classify(...)``.

    With throttle options, classification backs off by itself while the server sheds
    load (client/throttle.py): probe agents should use it.
    """

    def __init__(
        self,
        target: str,
        timeout_s: float = 30.0,
        throttle: ThrottleOptions | None = None,
        own_connection: bool = False,
        security: ChannelSecurity | None = None,
    ) -> None:
        super().__init__(aio_channel(target, channel_options(own_connection), security))
        self.timeout_s = timeout_s
        self.throttle = AdaptiveThrottle(throttle) if throttle is not None else None

    async def __aenter__(self) -> AsyncFaultprintClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def embed(self, window: np.ndarray, network: str = "") -> tuple[np.ndarray, str]:
        """(embedding, model version); network is needed by a model that reads network baselines."""
        response = await self.probe.EmbedWindow(
            probe_service_pb2.EmbedWindowRequest(window=encode_window(window), network=network),
            timeout=self.timeout_s,
        )
        return np.asarray(response.embedding, np.float32), response.model_version

    async def classify(
        self, network: str, node: str, window: WindowLike, top_k: int = 0, timeout_s: float | None = None
    ) -> Diagnosis:
        """The node's diagnosis; timeout_s (default: the client's) is the call's deadline."""
        request = _classify_request(network, node, window, top_k)
        if self.throttle is None:
            return (await self.probe.ClassifyWindow(request, timeout=timeout_s or self.timeout_s)).diagnosis
        if not self.throttle.admit():
            raise throttled_error()
        try:
            response = await self.probe.ClassifyWindow(request, timeout=timeout_s or self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            self.throttle.record_status(exc.code())
            raise
        self.throttle.record(True)
        return response.diagnosis

    def open_stream(self, timeout_s: float | None = None) -> ProbeStream:
        """A long-lived stream for a probe agent: send windows, receive diagnoses as they are ready."""
        return ProbeStream(self.probe.StreamClassifyWindows(timeout=timeout_s), self.throttle)

    def classify_stream(
        self, items: AsyncIterator[StreamItem]
    ) -> AsyncIterator[probe_service_pb2.StreamClassifyWindowsResponse]:
        async def requests() -> AsyncIterator[probe_service_pb2.StreamClassifyWindowsRequest]:
            async for item in items:
                yield _stream_request(item)

        return self.probe.StreamClassifyWindows(requests())

    async def create_reference_case(
        self,
        network: str,
        label: str,
        windows: Sequence[np.ndarray],
        description: str = "",
        case_id: str = "",
        request_id: str | None = None,
    ) -> ReferenceCase:
        """Enrols a case, retrying UNAVAILABLE and DEADLINE_EXCEEDED under one request id."""
        request = _create_request(network, label, windows, description, case_id, request_id)
        for attempt in itertools.count():
            try:
                response = await self.references.CreateReferenceCase(request, timeout=self.timeout_s)
                return response.reference_case
            except grpc.RpcError as error:
                pause_s = _retry_pause_s(error, attempt)
                if pause_s is None:
                    raise
                await asyncio.sleep(pause_s)
        raise AssertionError("unreachable")

    async def get_reference_case(self, network: str, case_id: str) -> ReferenceCase:
        request = _get_request(network, case_id)
        return (await self.references.GetReferenceCase(request, timeout=self.timeout_s)).reference_case

    async def delete_reference_case(self, network: str, case_id: str) -> None:
        request = _delete_request(network, case_id)
        await self.references.DeleteReferenceCase(request, timeout=self.timeout_s)

    def stream_minutes(self) -> grpc.aio.StreamStreamCall:
        """A StreamMinutes call: write minutes_request(...) messages, read acknowledgements."""
        return self.probe.StreamMinutes()

    async def watch_incidents(
        self, network: str = "", node: str = "", label: str = "", cursor: str = ""
    ) -> AsyncIterator[incident_service_pb2.IncidentEvent]:
        """Incident events as they happen (after cursor: "" from now, "0" from the oldest kept)."""
        request = incident_service_pb2.WatchIncidentsRequest(
            network=network, node=node, label=label, cursor=cursor
        )
        async for event in self.incidents.WatchIncidents(request):
            yield event

    async def open_incidents(self, network: str) -> list[incident_service_pb2.Incident]:
        request = incident_service_pb2.ListOpenIncidentsRequest(network=network)
        return list((await self.incidents.ListOpenIncidents(request, timeout=self.timeout_s)).incidents)

    async def node_incidents(
        self, network: str, node: str, page_size: int = 0
    ) -> list[incident_service_pb2.Incident]:
        request = incident_service_pb2.ListNodeIncidentsRequest(
            network=network, node=node, page_size=page_size
        )
        return list((await self.incidents.ListNodeIncidents(request, timeout=self.timeout_s)).incidents)

    async def acknowledge_incident(
        self, network: str, incident_id: str, operator: str, note: str = ""
    ) -> incident_service_pb2.Incident:
        request = incident_service_pb2.AcknowledgeIncidentRequest(
            network=network, incident_id=incident_id, operator=operator, note=note
        )
        return (await self.incidents.AcknowledgeIncident(request, timeout=self.timeout_s)).incident

    async def node_diagnosis(self, network: str, node: str) -> model_service_pb2.NodeDiagnosis:
        request = model_service_pb2.GetNodeDiagnosisRequest(network=network, node=node)
        return (await self.model.GetNodeDiagnosis(request, timeout=self.timeout_s)).node_diagnosis

    async def node_condition(self, network: str, node: str) -> incident_service_pb2.NodeCondition:
        request = incident_service_pb2.GetNodeConditionRequest(network=network, node=node)
        return (await self.incidents.GetNodeCondition(request, timeout=self.timeout_s)).condition

    async def model_info(self) -> ModelInfo:
        return await self.model.GetModelInfo(model_service_pb2.GetModelInfoRequest(), timeout=self.timeout_s)

    async def network_baseline(self, network: str) -> reference_case_service_pb2.NetworkBaseline:
        """The baseline the serving model reads the network's windows against."""
        request = reference_case_service_pb2.GetNetworkBaselineRequest(network=network)
        return (await self.references.GetNetworkBaseline(request, timeout=self.timeout_s)).baseline

    async def add_baseline_traffic(
        self, network: str, windows: Sequence[np.ndarray], replace: bool = False
    ) -> int:
        """Adds unlabelled windows of the network's traffic to its baseline; returns the batches kept."""
        request = _traffic_request(network, windows, replace)
        return (await self.references.AddBaselineTraffic(request, timeout=self.timeout_s)).stored_batches
