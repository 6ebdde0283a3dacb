"""The batching session: a window's way through the batch scheduler to its embedding and its match.

Probe RPCs decode a window, queue it with a key and a deadline, and get back its
embedding and its diagnosis against the network's reference cases, computed with every
other window of its batch under one model version on one device.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from opentelemetry.trace import SpanContext

from faultprint.server.batching.assembly import BatchBuffers, assemble, split
from faultprint.server.batching.scheduler import Batch, BatchRun, BatchScheduler, BatchSchedulerOptions
from faultprint.server.model.host import ModelHost, ServingState
from faultprint.server.model.runner import ModelRunner
from faultprint.server.model.shadow import Shadow
from faultprint.server.references.index import Match, NetworkIndex
from faultprint.server.rpc.errors import FailedPrecondition, NotFound
from faultprint.server.rpc.windows import decode_window
from faultprint.server.telemetry import ServerTelemetry, links, traced_call
from faultprint.traffic.baseline import normalise
from faultprint.v1 import diagnosis_pb2, window_pb2

_VERDICTS = {
    "normal": diagnosis_pb2.VERDICT_NORMAL,
    "fault": diagnosis_pb2.VERDICT_FAULT,
    "unknown": diagnosis_pb2.VERDICT_UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class EncodeRequest:
    """One window queued for the encoder, and what to match its embedding against."""

    values: np.ndarray
    # The network whose reference cases the embedding is matched against (None: embed only).
    network: str | None = None
    # Neighbours to return; 0 means the server's default.
    top_k: int = 0
    # Match the embedding against the network's cases (False: the network only names the
    # baseline the window is read against, for EmbedWindow).
    match: bool = True
    # The span of the call that asked, if it is traced: the batch span links to it.
    trace: SpanContext | None = field(default_factory=traced_call)


@dataclass(frozen=True, slots=True)
class Embedded:
    """A window's embedding, its match (when asked for) and the serving state that produced both."""

    embedding: np.ndarray
    state: ServingState
    # None when embedding only, or when the network had no cases in this state.
    match: Match | None = None


class Encoder:
    """The batched encoder path: validation, its batch scheduler, and the batch function."""

    def __init__(
        self,
        host: ModelHost,
        telemetry: ServerTelemetry,
        options: BatchSchedulerOptions,
        shadow: Shadow | None = None,
        default_top_k: int = 3,
    ) -> None:
        """shadow classifies a sample of windows with the candidate model, if the registry names one."""
        self.host = host
        self.telemetry = telemetry
        self.default_top_k = default_top_k
        self.shadow = shadow
        self.scheduler: BatchScheduler[EncodeRequest, Embedded] = BatchScheduler(
            self.run_batch, options, len(host.devices), observer=telemetry
        )
        self._buffers = [BatchBuffers(options.max_batch_size) for _ in host.devices]
        self._device_attributes = [{"device": name} for name in host.devices]

    def serving(self, state: ServingState) -> None:
        """A version starts to serve: the scheduler's batch-time estimate starts from its warm-up."""
        if state.batch_seconds:
            self.scheduler.seed_batch_times(dict(state.batch_seconds))

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
        requests = batch.payloads
        with self.telemetry.tracer.start_as_current_span("faultprint.batch", links=links(requests)) as span:
            span.set_attribute("batch.size", len(batch.payloads))
            span.set_attribute("batch.padded_size", batch.padded_size)
            span.set_attribute("batch.device", runner.device)
            span.set_attribute("model.version", state.version)
            buffer = buffers.acquire(requests[0].values.shape)
            try:
                inputs = assemble([r.values for r in requests], batch.padded_size, out=buffer)
                if runner.stages_inputs:
                    inputs = await loop.run_in_executor(
                        self.host.stagers[batch.device], _read_and_stage, state, runner, inputs, requests
                    )
                outputs, matches, compute_s = await loop.run_in_executor(
                    self.host.executors[batch.device], self._embed_and_match, state, runner, inputs, requests
                )
            finally:
                buffers.release(buffer)
        self.telemetry.batch_compute_s.record(compute_s, self._device_attributes[batch.device])
        if self.shadow is not None:
            self.shadow.offer(requests, matches)
        rows = split(outputs, len(requests))
        return BatchRun([Embedded(row, state, m) for row, m in zip(rows, matches, strict=True)], compute_s)

    def _embed_and_match(
        self, state: ServingState, runner: ModelRunner, inputs: object, requests: list[EncodeRequest]
    ) -> tuple[np.ndarray, list[Match | None], float]:
        started = time.perf_counter()
        if not runner.stages_inputs:
            inputs = read_against_baselines(state, inputs, requests)
        outputs = runner.embed(inputs)
        compute_s = time.perf_counter() - started
        return outputs, match_batch(state, outputs, requests, self.default_top_k), compute_s


def read_against_baselines(state: ServingState, inputs: Any, requests: list[EncodeRequest]) -> Any:
    """For a model that reads network baselines, each window normalised in place by its
    network's baseline (traffic/baseline.py), in one array operation over the batch; other
    models' inputs are returned as they are. A window whose network has no baseline (refused
    before it was queued, or lost since) is read with centre 0 and scale 1: its answer is an
    error."""
    if not state.runner.metadata.network_baseline:
        return inputs
    count, features = len(requests), inputs.shape[-1]
    centre = np.zeros((count, 1, features), np.float32)
    scale = np.ones((count, 1, features), np.float32)
    baselines = state.index.baselines
    for row, request in enumerate(requests):
        entry = baselines.get(request.network) if request.network is not None else None
        if entry is not None:
            centre[row, 0], scale[row, 0] = entry[0].centre, entry[0].scale
    normalise(inputs[:count], centre, scale, in_place=True)
    return inputs


def _read_and_stage(
    state: ServingState, runner: ModelRunner, inputs: Any, requests: list[EncodeRequest]
) -> Any:
    return runner.stage(read_against_baselines(state, inputs, requests))


def match_batch(
    state: ServingState, embeddings: np.ndarray, requests: list[EncodeRequest], default_top_k: int
) -> list[Match | None]:
    """Each request's match, computed network by network over the whole batch."""
    matches: list[Match | None] = [None] * len(requests)
    rows_by_network: dict[str, list[int]] = {}
    for row, request in enumerate(requests):
        if request.network is not None and request.match:
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


def require_network(state: ServingState, network: str) -> NetworkIndex:
    if network in state.index.without_baseline:
        raise FailedPrecondition(
            f"network {network!r} has reference cases but none labelled normal: model {state.version} reads "
            "each window against its network's normal traffic; enrol a normal case (an hour to a day of "
            "windows)",
            field="network",
            reason="NO_NORMAL_CASE",
        )
    index = state.index.get(network)
    if index is None:
        raise NotFound(
            f"network {network!r} has no reference cases; enrol some with "
            "ReferenceCaseService.CreateReferenceCase",
            field="network",
            reason="UNKNOWN_NETWORK",
        )
    return index
