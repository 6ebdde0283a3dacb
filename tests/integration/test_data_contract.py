"""The probe data contract through a real server: unusable windows refused by column, suspicious ones served and counted."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from faultprint.client.client import AsyncFaultprintClient
from faultprint.traffic.catalogue import FEATURE_INDEX
from faultprint.v1 import reference_case_service_pb2
from tests.unit.server.rpc.test_windows import RecordingCounter

pytestmark = pytest.mark.integration

NET = "net-contract"


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> RecordingCounter:
    from faultprint.server import telemetry

    recording = RecordingCounter()
    monkeypatch.setattr(telemetry, "values_out_of_contract", recording)
    return recording


@pytest.fixture
async def served(start_server, artifact, windows):  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(artifact))
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]], case_id="base")
        yield server, client


async def test_a_window_with_a_ratio_in_percent_is_refused_and_nothing_is_stored(  # type: ignore[no-untyped-def]
    served, windows, counter
) -> None:
    _, client = served
    percent = windows("normal", 1, seed=1)[0]
    percent[:, FEATURE_INDEX["kpi_answer_seizure_ratio"]] *= 100  # an exporter that fills it in percent
    for call in (
        lambda: client.classify(NET, "pcscf-1", percent),
        lambda: client.create_reference_case(NET, "normal", [percent], case_id="in-percent"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = refused.value.details()
        assert "breaks the probe data contract (docs/data-contract.md): kpi_answer_seizure_ratio" in details
        assert "valid range [0, 1] (ratio), and out of range in 60 of 60 minutes" in details
    assert counter.added == {("kpi_answer_seizure_ratio", "refused"): 120}
    listed = await client.references.ListReferenceCases(
        reference_case_service_pb2.ListReferenceCasesRequest(network=NET)
    )
    assert [c.reference_case_id for c in listed.reference_cases] == ["base"]
    # The server goes on serving windows that keep the contract.
    assert (await client.classify(NET, "pcscf-1", windows("normal", 1, seed=2)[0])).label == "normal"


async def test_a_window_with_a_few_values_out_of_contract_is_served_and_counted(  # type: ignore[no-untyped-def]
    served, windows, counter
) -> None:
    _, client = served
    window = windows("normal", 1, seed=3)[0]
    clean = await client.classify(NET, "pcscf-2", window)
    assert counter.added == {}
    window[[10, 11], FEATURE_INDEX["kpi_registration_success_rate"]] = 1.3
    window[40, FEATURE_INDEX["lat_bye_to_200_p95_ms"]] = -1.0
    suspicious = await client.classify(NET, "pcscf-2", window)
    assert suspicious.label == clean.label == "normal"
    assert counter.added == {
        ("kpi_registration_success_rate", "served"): 2, ("lat_bye_to_200_p95_ms", "served"): 1,
    }  # fmt: skip
    embedding, _ = await client.embed(window)
    assert np.isfinite(embedding).all()
    assert counter.added[("kpi_registration_success_rate", "served")] == 4
