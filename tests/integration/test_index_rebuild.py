"""A replica indexes each network in one pass at start-up, on a reload and for a burst of enrolments
made elsewhere, however many cases the network has."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.layout import RedisLayout
from faultprint.server.references import index as reference_index
from faultprint.server.references.store import ReferenceStore, StoredCase
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-big"
CASES = 2000


async def test_start_up_and_reload_build_each_network_index_once(
    start_server, artifact, windows, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    first, target = await start_server(model_source=str(artifact))
    meta = first.host.current.runner.metadata
    rng = np.random.default_rng(0)
    writer = ReferenceStore(first.redis, RedisLayout(first.settings.redis_prefix), origin="another-writer")
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]], case_id="c00000")
    built: list[int] = []
    real_init = reference_index.NetworkIndex.__init__

    def counting_init(self, cases):  # type: ignore[no-untyped-def]
        real_init(self, cases)
        built.append(len(self.cases))

    monkeypatch.setattr(reference_index.NetworkIndex, "__init__", counting_init)
    # A burst of enrolments by another writer, as an import of an export makes them: the
    # replica learns of them from the change stream and embeds them under its version.
    burst = [
        (StoredCase(NET, f"c{i:05d}", "hss_unreachable", "", 1, meta.steps, meta.features, 0.0),
         rng.normal(size=(1, meta.steps, meta.features)).astype(np.float32))
        for i in range(1, CASES)
    ]  # fmt: skip
    assert await writer.restore(burst) == CASES - 1
    await eventually(lambda: first.host.holdings() == (1, CASES), 30)
    assert len(built) <= 10  # read in runs of up to 1000 events: a few rebuilds, not one per case
    built.clear()
    await first.host.reload_references()
    assert built == [CASES]
    built.clear()
    second, _ = await start_server(model_source=str(artifact))  # loads, then syncs with Redis
    assert second.host.holdings() == (1, CASES)
    assert built == [CASES, CASES]
