"""A model that reads network baselines, served: each network's baseline is learned from its normal
reference cases, stored in Redis per network and model version, used for every window of that
network, shown by GetNetworkBaseline, re-learned when its normal cases change, followed by other
replicas and rebuilt on a model swap."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from faultprint.client.client import AsyncFaultprintClient
from faultprint.encoder.artifact import load_tower, read_metadata
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.catalogue import FEATURE_NAMES
from faultprint.traffic.simulator import PROFILES, simulate_windows
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-baseline"


@pytest.fixture(scope="module")
def baseline_artifact(tmp_path_factory):  # type: ignore[no-untyped-def]
    from tests.conftest import make_artifact

    return make_artifact(tmp_path_factory.mktemp("baseline-model"), seed=71, network_baseline=True)


def _day(profile: str, count: int, seed: int, condition: str = "normal") -> np.ndarray:
    return simulate_windows(PROFILES[profile], [condition], count, seed)[0]


def _embedding_of(artifact, window: np.ndarray, baseline: NetworkBaseline) -> np.ndarray:  # type: ignore[no-untyped-def]
    tower = load_tower(artifact, read_metadata(artifact))
    return np.asarray(tower(baseline.normalise(window[None]), training=False))[0]


async def test_a_fault_before_any_normal_traffic_is_refused_with_what_to_do(
    start_server, baseline_artifact
) -> None:  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(baseline_artifact))
    fault = _day("metro-eu", 1, 3, "hss_unreachable")
    async with AsyncFaultprintClient(target) as client:
        assert (await client.model_info()).reads_network_baselines
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.create_reference_case(NET, "hss_unreachable", [fault[0]])
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "enrol a normal case first" in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as unnamed:
            await client.embed(fault[0])
        assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name the network" in unnamed.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.classify(NET, "pcscf-1", fault[0])
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert await server.host.store.list_cases(NET) == []


async def test_normal_cases_teach_the_baseline_every_window_of_the_network_is_read_against(
    start_server, baseline_artifact, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(baseline_artifact))
    version = server.host.current.version
    normal = _day("metro-eu", 24, 5)
    rural = _day("rural-eu", 24, 6)
    window = _day("metro-eu", 1, 7, "hss_unreachable")[0]
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", list(normal))
        await client.create_reference_case("net-small", "normal", list(rural))
        await client.create_reference_case(NET, "hss_unreachable", [window])
        diagnosis = await client.classify(NET, "pcscf-1", window)
        assert diagnosis.label == "hss_unreachable" and diagnosis.distance < 1e-3
        on_metro, _ = await client.embed(window, network=NET)
        on_rural, _ = await client.embed(window, network="net-small")
        shown = await client.network_baseline(NET)
    learned = NetworkBaseline.fit(normal)
    # The window is embedded as the network's baseline reads it, not as it arrived.
    assert np.allclose(on_metro, _embedding_of(baseline_artifact, window, learned), atol=1e-4)
    assert np.abs(on_metro - on_rural).max() > 1e-3, "another network's baseline reads it otherwise"
    assert (shown.network, shown.model_version, shown.minutes, shown.normal_case_count) == (
        NET, version, 24 * 60, 1
    )  # fmt: skip
    assert [s.name for s in shown.statistics] == list(FEATURE_NAMES)
    assert np.allclose([s.centre for s in shown.statistics], learned.centre, atol=1e-5)
    assert np.allclose([s.scale for s in shown.statistics], learned.scale, atol=1e-5)
    stored = connect(redis_url).hgetall(RedisLayout(redis_prefix).baseline(version, NET))
    assert NetworkBaseline.from_bytes(stored[b"packed"], 1440).centre.tobytes() == learned.centre.tobytes()


async def test_a_new_normal_case_re_learns_the_baseline_and_re_embeds_the_network(
    start_server, baseline_artifact, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(baseline_artifact))
    host, layout = server.host, RedisLayout(redis_prefix)
    r = connect(redis_url)
    first, second = _day("metro-eu", 12, 8), _day("metro-eu", 12, 9)
    fault = _day("metro-eu", 1, 10, "dns_failure")[0]
    async with AsyncFaultprintClient(target) as client:
        one = await client.create_reference_case(NET, "normal", list(first))
        case = await client.create_reference_case(NET, "dns_failure", [fault])
        old_space = host.current.index.baselines[NET][1]
        await client.create_reference_case(NET, "normal", list(second))
        baseline, space = host.current.index.baselines[NET]
        assert space != old_space and baseline.minutes == 24 * 60
        assert np.array_equal(baseline.centre, NetworkBaseline.fit(np.concatenate([first, second])).centre)
        # Every case was embedded again against the new baseline; the old embeddings are gone.
        assert r.hexists(layout.embeddings(space, NET), case.reference_case_id)
        assert not r.exists(layout.embeddings(old_space, NET))
        on_fault = await client.classify(NET, "pcscf-2", fault)
        assert on_fault.label == "dns_failure" and on_fault.distance < 1e-3
        # Without any normal case left, the network's windows cannot be read.
        await client.delete_reference_case(NET, one.reference_case_id)
        remaining = [c for c in await host.store.list_cases(NET) if c.label == "normal"]
        await client.delete_reference_case(NET, remaining[0].case_id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.classify(NET, "pcscf-2", fault)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "none labelled normal" in refused.value.details()


async def test_other_replicas_and_a_model_swap_learn_the_same_baseline(
    start_server, baseline_artifact, artifact_factory, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    first, target = await start_server(model_source=str(baseline_artifact))
    second, other = await start_server(model_source=str(baseline_artifact))
    normal = _day("rural-eu", 6, 11)
    fault = _day("rural-eu", 1, 12, "rx_pcrf_down")[0]
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", list(normal))
        await client.create_reference_case(NET, "rx_pcrf_down", [fault])
    await eventually(lambda: second.host.current.index.case_count(NET) == 2, 20)
    assert second.host.current.index.baselines[NET][1] == first.host.current.index.baselines[NET][1]
    async with AsyncFaultprintClient(other) as client:
        diagnosis = await client.classify(NET, "pcscf-3", fault)
    assert diagnosis.label == "rx_pcrf_down" and diagnosis.distance < 1e-3
    # A new version learns the baseline again, stores it under its own name, and serves it.
    newer = artifact_factory(seed=72, network_baseline=True)
    state = await first.host.load(newer)
    _, space = state.index.baselines[NET]
    assert space.startswith(state.version + "~") and state.index.case_count(NET) == 2
    assert connect(redis_url).exists(RedisLayout(redis_prefix).baseline(state.version, NET))
    async with AsyncFaultprintClient(target) as client:
        on_new, version = await client.embed(fault, network=NET)
    assert version == state.version
    assert np.allclose(on_new, _embedding_of(newer, fault, NetworkBaseline.fit(normal)), atol=1e-4)


async def test_a_model_that_reads_no_baselines_shows_none(start_server, artifact, windows) -> None:  # type: ignore[no-untyped-def]
    _, target = await start_server(model_source=str(artifact))
    async with AsyncFaultprintClient(target) as client:
        assert not (await client.model_info()).reads_network_baselines
        await client.create_reference_case(NET, "normal", [windows("normal", 1)[0]])
        embedding, _ = await client.embed(windows("normal", 1)[0])  # no network needed
        assert embedding.shape == (4,)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.network_baseline(NET)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "against no network baseline" in refused.value.details()


async def test_an_operator_enrols_a_day_of_normal_and_one_fault_window_from_a_row_file(
    start_server, baseline_artifact, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from faultprint.client.__main__ import main as client_main
    from faultprint.traffic.rows import Rows, read_rows, write_rows
    from faultprint.traffic.simulator import Episode, simulate_timeline

    server, target = await start_server(model_source=str(baseline_artifact))
    start = 29_000_000
    values, labels = simulate_timeline(PROFILES["island-apac"], start, 2 * 1440,
                                       [Episode("hss_unreachable", 1440 + 600, 90)], np.random.default_rng(3))  # fmt: skip
    minutes = start + np.arange(2 * 1440)
    rows = Rows(np.full(len(minutes), "pcscf-9"), np.full(len(minutes), "op-net"), minutes, values, labels)
    path = tmp_path / "export.parquet"
    write_rows(rows, path)
    day = ["enrol", "--rows", str(path), "--network", "op-net", "--node", "pcscf-9", "--label", "normal",
           "--from", "2025-02-20T00:00Z", "--to", "2025-02-21T00:00Z", "--target", target]  # fmt: skip
    assert read_rows(path).minute.min() == start  # 2025-02-19T21:20Z: the day enrolled starts 160 minutes in
    assert await asyncio.to_thread(client_main, ["--target", target, *day[:-2]]) == 0
    fault_start = start + 1440 + 620
    one = ["--target", target, "enrol", "--rows", str(path), "--network", "op-net", "--node", "pcscf-9",
           "--label", "hss_unreachable", "--from", str(fault_start), "--to", str(fault_start + 60)]  # fmt: skip
    assert await asyncio.to_thread(client_main, one) == 0
    printed = capsys.readouterr().out
    assert "enrolled 1 normal cases in op-net" in printed and "enrolled 1 hss_unreachable cases" in printed
    cases = await server.host.store.list_cases("op-net")
    assert sorted((c.label, c.window_count) for c in cases) == [("hss_unreachable", 1), ("normal", 24)]
    assert server.host.current.index.baselines["op-net"][0].minutes == 24 * 60
    # The second day's traffic, fault and all, joins the baseline.
    learn = ["--target", target, "baseline", "--network", "op-net", "--learn-rows", str(path),
             "--from", str(start + 1440), "--to", str(start + 2 * 1440)]  # fmt: skip
    assert await asyncio.to_thread(client_main, learn) == 0
    assert "and 24 windows of traffic" in capsys.readouterr().out
    assert server.host.current.index.baselines["op-net"][0].minutes == 48 * 60
    # A span with no usable window says why and enrols nothing.
    nothing = ["--target", target, "enrol", "--rows", str(path), "--network", "op-net", "--node", "pcscf-9",
               "--label", "normal", "--from", str(start), "--to", str(start + 30)]  # fmt: skip
    assert await asyncio.to_thread(client_main, nothing) == 2
    assert "no usable 60-minute window" in capsys.readouterr().err
    assert len(await server.host.store.list_cases("op-net")) == 2


async def test_unlabelled_traffic_joins_the_baseline_on_every_replica(
    start_server, baseline_artifact, artifact
) -> None:  # type: ignore[no-untyped-def]
    first, target = await start_server(model_source=str(baseline_artifact))
    second, _ = await start_server(model_source=str(baseline_artifact))
    normal = _day("metro-eu", 6, 13)
    # A day of traffic, labels unread: mostly normal, with a storm in it.
    traffic = np.concatenate([_day("metro-eu", 10, 14), _day("metro-eu", 2, 15, "registration_storm")])
    async with AsyncFaultprintClient(target) as client:
        await client.create_reference_case(NET, "normal", list(normal))
        assert await client.add_baseline_traffic(NET, list(traffic), replace=True) == 1
        shown = await client.network_baseline(NET)
        assert (shown.normal_case_count, shown.traffic_window_count, shown.minutes) == (1, 12, 18 * 60)
        learned = NetworkBaseline.fit(np.concatenate([normal, traffic]))
        assert np.allclose([s.centre for s in shown.statistics], learned.centre, atol=1e-5)
        space = first.host.current.index.baselines[NET][1]
        await eventually(lambda: second.host.current.index.baselines.get(NET, (None, ""))[1] == space, 20)
        # Replacing it with nothing leaves the normal cases alone, on both replicas.
        assert await client.add_baseline_traffic(NET, [], replace=True) == 0
        alone = first.host.current.index.baselines[NET][1]
        assert alone != space
        await eventually(lambda: second.host.current.index.baselines[NET][1] == alone, 20)
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await client.add_baseline_traffic(NET, [], replace=False)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, plain = await start_server(model_source=str(artifact))
    async with AsyncFaultprintClient(plain) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.add_baseline_traffic("net-plain", list(traffic[:1]))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
