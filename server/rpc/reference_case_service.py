"""ReferenceCaseService: operators enrol, read, list and delete each network's reference cases."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from faultprint.server.batching.session import Encoder
from faultprint.server.references.store import StoredCase, check_id
from faultprint.server.rpc.errors import InvalidArgument, NotFound
from faultprint.server.rpc.health import REFERENCE_CASE_SERVICE
from faultprint.server.rpc.unary import unary_rpc
from faultprint.v1 import reference_case_service_pb2, reference_case_service_pb2_grpc, window_pb2

log = logging.getLogger(__name__)

# Most example windows in one reference case.
MAX_WINDOWS_PER_CASE = 64
# Longest description a reference case may carry, in characters: every case's description
# travels in each ListReferenceCases page, which must stay well under the message limit.
MAX_DESCRIPTION_CHARS = 2048


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
    service_name = REFERENCE_CASE_SERVICE.full_name

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.host = encoder.host
        self.telemetry = encoder.telemetry

    def _decode_windows(self, windows: Sequence[window_pb2.Window], least: int, what: str) -> np.ndarray:
        """The request's windows, decoded and stacked (n, steps, features); INVALID_ARGUMENT
        unless there are least to MAX_WINDOWS_PER_CASE of them."""
        if not least <= len(windows) <= MAX_WINDOWS_PER_CASE:
            raise InvalidArgument(
                f"{what} {least} to {MAX_WINDOWS_PER_CASE} example windows, got {len(windows)}",
                field="windows",
            )
        if not windows:
            meta = self.host.require().runner.metadata
            return np.zeros((0, meta.steps, meta.features), np.float32)
        return np.stack([self._decode(i, w) for i, w in enumerate(windows)])

    def _decode(self, position: int, window: window_pb2.Window) -> np.ndarray:
        """One of a request's windows; a refusal names it by position (windows[3].packed_values)."""
        try:
            return self.encoder.decode(window)
        except InvalidArgument as exc:
            exc.field = f"windows[{position}]{exc.field.removeprefix('window')}"
            raise

    @unary_rpc("CreateReferenceCase")
    async def CreateReferenceCase(
        self,
        request: reference_case_service_pb2.CreateReferenceCaseRequest,
        context: grpc.aio.ServicerContext,
    ) -> reference_case_service_pb2.CreateReferenceCaseResponse:
        check_id("network", request.network)
        check_id("label", request.label)
        check_id("reference_case_id", request.reference_case_id, optional=True)
        check_id("request_id", request.request_id, optional=True)
        if len(request.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidArgument(
                f"description has {len(request.description)} characters, at most {MAX_DESCRIPTION_CHARS}",
                field="description",
            )
        windows = self._decode_windows(request.windows, 1, "a reference case needs")
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
        check_id("page_token", request.page_token, optional=True)
        size = min(request.page_size or 100, 1000)
        cases = [
            c for c in await self.host.store.list_cases(request.network) if c.case_id > request.page_token
        ]
        page = cases[:size]
        return reference_case_service_pb2.ListReferenceCasesResponse(
            reference_cases=[_case_proto(c) for c in page],
            next_page_token=page[-1].case_id if len(cases) > size else "",
        )

    @unary_rpc("GetNetworkBaseline")
    async def GetNetworkBaseline(
        self, request: reference_case_service_pb2.GetNetworkBaselineRequest, context: grpc.aio.ServicerContext
    ) -> reference_case_service_pb2.GetNetworkBaselineResponse:
        check_id("network", request.network)
        state = self.host.require()
        meta = state.runner.metadata
        if not meta.network_baseline:
            raise NotFound(f"model {state.version} reads windows as they are, against no network baseline")
        stored = await self.host.store.load_baseline(request.network, state.version)
        if stored is None:
            raise NotFound(
                f"network {request.network!r} has no baseline under model {state.version}: "
                "enrol a normal case"
            )
        updated = Timestamp()
        updated.FromNanoseconds(int(stored.updated_unix_s * 1e9))
        baseline = stored.baseline
        return reference_case_service_pb2.GetNetworkBaselineResponse(
            baseline=reference_case_service_pb2.NetworkBaseline(
                network=request.network, model_version=state.version, minutes=baseline.minutes,
                normal_case_count=stored.normal_cases, update_time=updated,
                traffic_window_count=stored.traffic_windows,
                statistics=[
                    reference_case_service_pb2.StatisticBaseline(name=name, centre=float(c), scale=float(s))
                    for name, c, s in zip(meta.feature_names, baseline.centre, baseline.scale, strict=True)
                ],
            )
        )  # fmt: skip

    @unary_rpc("AddBaselineTraffic")
    async def AddBaselineTraffic(
        self, request: reference_case_service_pb2.AddBaselineTrafficRequest, context: grpc.aio.ServicerContext
    ) -> reference_case_service_pb2.AddBaselineTrafficResponse:
        check_id("network", request.network)
        # No windows only with replace: that clears the traffic.
        least = 0 if request.replace else 1
        windows = self._decode_windows(request.windows, least, "baseline traffic (replace clears it) needs")
        kept = await self.host.add_traffic(request.network, windows, request.replace)
        log.info("baseline traffic of %s: %d windows added (replace: %s), %d batches kept",
                 request.network, len(windows), request.replace, kept)  # fmt: skip
        return reference_case_service_pb2.AddBaselineTrafficResponse(stored_batches=kept)

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
