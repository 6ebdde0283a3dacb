"""Reference cases in a real Redis: a deletion removes the case's embeddings under every model version."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.registry.connection import connect_async
from faultprint.registry.layout import RedisLayout
from faultprint.server.references.store import _DELETE, ReferenceStore

pytestmark = pytest.mark.integration

NET = "net-s"


@pytest.fixture
async def store(redis_url: str, redis_prefix: str):  # type: ignore[no-untyped-def]
    client = await connect_async(redis_url)
    yield ReferenceStore(client, RedisLayout(redis_prefix), origin="test"), client
    await client.aclose()


async def test_a_deleted_case_leaves_no_embedding_under_any_version(store) -> None:  # type: ignore[no-untyped-def]
    references, client = store
    layout = references._layout
    windows = np.ones((1, 60, 129), np.float32)
    for case_id in ("keep", "gone"):
        await references.create(NET, case_id, "normal", "", windows, "v1", np.ones((1, 8), np.float32))
    # Another version embedded the network since (as a replica that loads it does).
    await client.sadd(layout.embedding_versions(NET), "v2")
    await client.hset(layout.embeddings("v2", NET), mapping={"keep": b"e", "gone": b"e"})

    await references.delete(NET, "gone")
    for version in ("v1", "v2"):
        assert set(await client.hkeys(layout.embeddings(version, NET))) == {b"keep"}
    assert set(await client.hkeys(layout.cases(NET))) == {b"keep"}


async def test_a_deletion_that_read_the_versions_before_a_new_one_changes_nothing(store) -> None:  # type: ignore[no-untyped-def]
    references, client = store
    layout = references._layout
    await references.create(NET, "c1", "normal", "", np.ones((1, 60, 129), np.float32), "v1", np.ones((1, 8)))
    await client.sadd(layout.embedding_versions(NET), "v2")  # after the caller read {v1}
    script = client.register_script(_DELETE)
    keys = [layout.cases(NET), layout.windows(NET), layout.outbox(NET), layout.embedding_versions(NET),
            layout.embeddings("v1", NET)]  # fmt: skip
    assert await script(keys=keys, args=["c1", NET, 100, "test", "v1"]) == -1
    assert await client.hexists(layout.cases(NET), "c1")  # untouched: the caller reads again
