"""Minute streams over a real server and Redis: each node's window kept, repaired and diagnosed every
minute, resumed by another replica from Redis, and incidents raised, cleared, watched and acknowledged."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from faultprint.client.client import AsyncFaultprintClient, minutes_request
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.traffic.contract import IS_COUNT
from faultprint.traffic.simulator import PROFILES, Episode, simulate_timeline
from faultprint.v1 import incident_service_pb2
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-stream"
FAULT = "hss_unreachable"
START = 29_000_000  # a UTC minute (2025)
# The streamed day: normal, then the fault for 90 minutes from minute 240, then normal.
ONSET, DURATION, SPAN = 240, 90, 540


@pytest.fixture(scope="module")
def baseline_artifact(tmp_path_factory):  # type: ignore[no-untyped-def]
    from tests.conftest import make_artifact

    return make_artifact(tmp_path_factory.mktemp("stream-model"), seed=73, network_baseline=True)


@pytest.fixture(scope="module")
def slow_baseline_artifact(tmp_path_factory):  # type: ignore[no-untyped-def]
    """One window takes the encoder about a tenth of a second or more on two cores."""
    from tests.conftest import make_artifact

    return make_artifact(tmp_path_factory.mktemp("slow-stream-model"), seed=74, network_baseline=True,
                         lstm_units=768)  # fmt: skip


@pytest.fixture(scope="module")
def traffic() -> dict[str, np.ndarray]:
    """A normal day to enrol, and the streamed span with its fault."""
    profile = PROFILES["metro-eu"]
    rng = np.random.default_rng(5)
    normal_day, _ = simulate_timeline(profile, START - 1440, 1440, [], rng)
    streamed, labels = simulate_timeline(profile, START, SPAN, [Episode(FAULT, ONSET, DURATION)], rng)
    return {"normal": normal_day.astype(np.float32), "streamed": streamed.astype(np.float32), "labels": labels}  # fmt: skip


async def _enrol(client: AsyncFaultprintClient, traffic: dict[str, np.ndarray]) -> None:
    """A normal day, and the fault. The tests' encoder is untrained, so the fault is enrolled
    from the streamed episode itself: its windows ending every 10 minutes of the fault."""
    await client.create_reference_case(NET, "normal", list(traffic["normal"].reshape(24, 60, -1)))
    rows = traffic["streamed"]
    ends = range(ONSET + 10, ONSET + DURATION + 1, 10)
    await client.create_reference_case(NET, FAULT, [rows[end - 59 : end + 1] for end in ends])


async def _send(call, sequence: int, node: str, minutes: list[int], rows: np.ndarray):  # type: ignore[no-untyped-def]
    await call.write(minutes_request(sequence, NET, [node] * len(minutes), minutes, rows))
    return await call.read()


async def test_a_node_streamed_minute_by_minute_is_diagnosed_each_minute_once_its_hour_is_full(
    start_server, baseline_artifact, traffic, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    _server, target = await start_server(model_source=str(baseline_artifact))
    rows = traffic["streamed"]
    async with AsyncFaultprintClient(target) as client:
        await _enrol(client, traffic)
        call = client.stream_minutes()
        first = await _send(call, 1, "pcscf-1", list(range(START, START + 59)), rows[:59])
        assert (first.sequence, first.accepted, first.diagnosed, first.not_diagnosed) == (1, 59, 0, 59)
        hour = await _send(call, 2, "pcscf-1", [START + 59], rows[59:60])
        assert (hour.accepted, hour.diagnosed) == (1, 1)
        after = await _send(call, 3, "pcscf-1", list(range(START + 60, START + 70)), rows[60:70])
        assert (after.accepted, after.diagnosed, after.not_diagnosed) == (10, 10, 0)
        await call.done_writing()
        diagnosis = await client.node_diagnosis(NET, "pcscf-1")
    assert diagnosis.label in ("normal", FAULT, "unknown") and diagnosis.model_version
    layout = RedisLayout(redis_prefix)
    ring = connect(redis_url).get(layout.node_window(NET, "pcscf-1"))
    assert ring is not None and len(ring) == 60 * (8 + 4 * rows.shape[1])
    minutes = np.frombuffer(ring, [("minute", "<i8"), ("values", "<f4", (rows.shape[1],))])["minute"]
    assert sorted(minutes) == list(range(START + 10, START + 70)), "the ring holds the last hour"


async def test_duplicates_late_and_reordered_minutes_gaps_and_counter_resets_are_handled_and_counted(
    start_server, baseline_artifact, traffic
) -> None:  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(baseline_artifact))
    rows = traffic["streamed"].copy()
    count_column = int(np.flatnonzero(IS_COUNT & (rows[:80] > 0).all(axis=0))[0])
    rows[75, count_column] = -500.0  # a probe restart: the counter's delta is negative
    async with AsyncFaultprintClient(target) as client:
        await _enrol(client, traffic)
        call = client.stream_minutes()
        await _send(call, 1, "pcscf-2", list(range(START, START + 60)), rows[:60])
        # Minutes 60-64 arrive after 65-69: 65 is diagnosed across a 5-minute gap (interpolated,
        # as the trainer's windowing does); the late arrivals fill the ring without a diagnosis.
        ahead = await _send(call, 2, "pcscf-2", list(range(START + 65, START + 70)), rows[65:70])
        assert (ahead.accepted, ahead.diagnosed) == (5, 5)
        behind = await _send(call, 3, "pcscf-2", list(range(START + 60, START + 65)), rows[60:65])
        assert (behind.accepted, behind.reordered, behind.diagnosed) == (5, 5, 0)
        again = await _send(call, 4, "pcscf-2", list(range(START + 66, START + 68)), rows[66:68])
        assert (again.accepted, again.duplicates) == (0, 2)
        reset = await _send(call, 5, "pcscf-2", list(range(START + 70, START + 80)), rows[70:80])
        # The reset minute, the newest of its window when it arrives, holds the minute before's
        # value (no later one yet to interpolate towards): every minute is diagnosed.
        assert (reset.accepted, reset.diagnosed, reset.not_diagnosed) == (10, 10, 0)
        late = await _send(call, 6, "pcscf-2", [START + 5], rows[5:6])
        assert (late.accepted, late.late) == (0, 1)
        # A probe outage of 10 minutes is bridged: the node is diagnosed from its first minute back.
        outage = await _send(call, 7, "pcscf-2", list(range(START + 90, START + 95)), rows[90:95])
        assert (outage.accepted, outage.diagnosed, outage.not_diagnosed) == (5, 5, 0)
        # One longer than windowing bridges (31 minutes) leaves the node undiagnosed until at most
        # 30 minutes of it are left in the window.
        gap = await _send(call, 8, "pcscf-2", list(range(START + 126, START + 131)), rows[126:131])
        assert (gap.accepted, gap.diagnosed, gap.not_diagnosed) == (5, 0, 5)
        await call.done_writing()
    report = server.monitor.windows.report
    assert report.missing_minutes >= 5 + 10 + 31 and report.counter_resets >= 1
    assert report.values_interpolated > 0
    stats = server.monitor.stats
    assert (stats.duplicates, stats.late, stats.reordered) == (2, 1, 5)


async def test_bad_minutes_are_refused_one_by_one_and_the_stream_stays_open(
    start_server, baseline_artifact, traffic
) -> None:  # type: ignore[no-untyped-def]
    _server, target = await start_server(model_source=str(baseline_artifact))
    rows = traffic["streamed"]
    async with AsyncFaultprintClient(target) as client:
        await _enrol(client, traffic)
        call = client.stream_minutes()
        request = minutes_request(1, NET, ["pcscf-3", "pcscf-3"], [START, START + 1], rows[:2])
        request.minutes[0].packed_values = request.minutes[0].packed_values[:-4]
        request.minutes.add(
            network=NET, node="bad node!", minute=START, packed_values=request.minutes[1].packed_values
        )
        await call.write(request)
        ack = await call.read()
        assert ack.accepted == 1 and [r.index for r in ack.refused] == [0, 2]
        assert all(r.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in ack.refused)
        assert "516 bytes" in ack.refused[0].message and "not a valid id" in ack.refused[1].message
        fine = await _send(call, 2, "pcscf-3", [START + 2], rows[2:3])
        assert fine.accepted == 1
        await call.done_writing()


async def test_another_replica_resumes_a_node_from_redis_without_waiting_an_hour(
    start_server, baseline_artifact, traffic
) -> None:  # type: ignore[no-untyped-def]
    _first, first_target = await start_server(model_source=str(baseline_artifact))
    _second, second_target = await start_server(model_source=str(baseline_artifact))
    rows = traffic["streamed"]
    async with AsyncFaultprintClient(first_target) as client:
        await _enrol(client, traffic)
        call = client.stream_minutes()
        await _send(call, 1, "pcscf-4", list(range(START, START + 70)), rows[:70])
        call.cancel()
    async with AsyncFaultprintClient(second_target) as client:
        call = client.stream_minutes()
        # The probe resends its last message (it may not have seen the acknowledgement): duplicates.
        again = await _send(call, 1, "pcscf-4", list(range(START + 65, START + 70)), rows[65:70])
        assert (again.accepted, again.duplicates) == (0, 5)
        resumed = await _send(call, 2, "pcscf-4", [START + 70], rows[70:71])
        assert (resumed.accepted, resumed.diagnosed) == (1, 1), "the window came back from Redis"
        await call.done_writing()
        condition = await client.node_condition(NET, "pcscf-4")
    assert condition.last_minute == START + 70 and len(condition.recent_labels) > 0


async def test_redis_holds_only_settled_rows_so_a_resuming_replica_can_diagnose_what_is_resent(
    start_server, slow_baseline_artifact, traffic, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    # A slow encoder, one window a batch: flushes run while minutes 60-69 are still in the encoder.
    _first, first_target = await start_server(model_source=str(slow_baseline_artifact), max_batch_size=1,
                                               node_flush_interval_s=0.05)  # fmt: skip
    _second, second_target = await start_server(model_source=str(slow_baseline_artifact))
    rows = traffic["streamed"]
    layout = RedisLayout(redis_prefix)
    store = connect(redis_url)
    async with AsyncFaultprintClient(first_target) as client:
        await _enrol(client, traffic)
        call = client.stream_minutes()
        await _send(call, 1, "pcscf-5", list(range(START, START + 60)), rows[:60])  # minute 59 diagnosed
        await call.write(
            minutes_request(2, NET, ["pcscf-5"] * 10, list(range(START + 60, START + 70)), rows[60:70])
        )
        await asyncio.sleep(0.15)  # flushes while minutes 60-69 wait for their batches
        with store.pipeline(transaction=True) as pipe:  # one slot: the ring and its frontier together
            pipe.get(layout.node_window(NET, "pcscf-5"))
            pipe.hget(layout.node_condition(NET, "pcscf-5"), "frontier")
            ring, frontier = pipe.execute()
        call.cancel()  # the replica is lost before it answers: the probe resends minutes 60-69
    held = np.frombuffer(ring, [("minute", "<i8"), ("values", "<f4", (rows.shape[1],))])["minute"]
    assert int(frontier) < START + 69, "read while minutes were still in the encoder"
    assert held.max() <= int(frontier), "no unsettled row overwrote the hour before it"
    async with AsyncFaultprintClient(second_target) as client:
        call = client.stream_minutes()
        resent = await _send(call, 1, "pcscf-5", list(range(START + 60, START + 70)), rows[60:70])
        await call.done_writing()
    assert resent.accepted + resent.duplicates == 10 and resent.accepted >= 1
    assert (resent.diagnosed, resent.not_diagnosed) == (resent.accepted, 0)
    store.close()


async def test_a_fault_raises_one_incident_cleared_when_the_node_is_back_watched_listed_and_acknowledged(
    start_server, baseline_artifact, traffic
) -> None:  # type: ignore[no-untyped-def]
    _server, target = await start_server(model_source=str(baseline_artifact))
    rows = traffic["streamed"]
    events: list[incident_service_pb2.IncidentEvent] = []
    async with AsyncFaultprintClient(target) as client:
        await _enrol(client, traffic)

        async def watch() -> None:
            async for event in client.watch_incidents(network=NET, cursor="0"):
                events.append(event)

        watcher = asyncio.create_task(watch())
        call = client.stream_minutes()
        for sequence, start in enumerate(range(0, ONSET + 60, 30)):
            await _send(call, sequence, "pcscf-5", list(range(START + start, START + start + 30)),
                        rows[start : start + 30])  # fmt: skip
        await eventually(lambda: events)
        opened = await client.open_incidents(NET)
        assert [i.label for i in opened] == [FAULT]
        incident = opened[0]
        assert ONSET <= incident.start_time.seconds // 60 - START <= ONSET + 20
        assert incident.explanation.from_normal and incident.explanation.families
        assert incident.severity == incident_service_pb2.SEVERITY_MAJOR
        acked = await client.acknowledge_incident(NET, incident.incident_id, "noc-alice", "on it")
        assert acked.acknowledged_by == "noc-alice"
        for sequence, start in enumerate(range(ONSET + 60, SPAN, 30), start=100):
            await _send(call, sequence, "pcscf-5", list(range(START + start, START + start + 30)),
                        rows[start : start + 30])  # fmt: skip
        await call.done_writing()
        await eventually(lambda: len(events) >= 3)
        watcher.cancel()
        assert await client.open_incidents(NET) == []
        history = await client.node_incidents(NET, "pcscf-5")
    kinds = [e.type for e in events]
    assert kinds == [incident_service_pb2.INCIDENT_EVENT_TYPE_ONSET, incident_service_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
                     incident_service_pb2.INCIDENT_EVENT_TYPE_ABATED]  # fmt: skip
    end_minute = events[2].incident.end_time.seconds // 60 - START
    assert ONSET + DURATION <= end_minute <= ONSET + DURATION + 10
    # Decided (the traffic minute whose diagnosis caused each event) within 10 minutes.
    assert ONSET <= events[0].minute - START <= ONSET + 10
    assert ONSET + DURATION <= events[2].minute - START <= ONSET + DURATION + 10 and events[1].minute == 0
    assert [h.incident_id for h in history] == [incident.incident_id]
    assert history[0].HasField("end_time") and history[0].acknowledged_by == "noc-alice"


async def test_a_watcher_resumes_from_its_cursor_without_losing_an_event(
    start_server, baseline_artifact, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    _server, target = await start_server(model_source=str(baseline_artifact))
    r = connect(redis_url)
    stream = RedisLayout(redis_prefix).incidents
    for i in range(5):
        event = incident_service_pb2.IncidentEvent(type=incident_service_pb2.INCIDENT_EVENT_TYPE_ONSET)
        event.incident.incident_id = f"{NET}/n{i}/x@{i}"
        r.xadd(stream, {"kind": "ONSET", "network": NET, "node": f"n{i}", "label": "x", "id": "i",
                        "event": event.SerializeToString()})  # fmt: skip
    async with AsyncFaultprintClient(target) as client:
        seen = []
        async for event in client.watch_incidents(network=NET, cursor="0"):
            seen.append(event)
            if len(seen) == 2:
                break
        rest = []
        async for event in client.watch_incidents(network=NET, cursor=seen[-1].cursor):
            rest.append(event)
            if len(rest) == 3:
                break
        only = []
        async for event in client.watch_incidents(network=NET, node="n4", cursor="0"):
            only.append(event)
            break
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            async for _ in client.watch_incidents(cursor="yesterday"):
                pass
    assert [e.incident.incident_id for e in seen + rest] == [f"{NET}/n{i}/x@{i}" for i in range(5)]
    assert only[0].incident.incident_id == f"{NET}/n4/x@4"
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_full_batch_queue_slows_a_minute_stream_down_and_drops_no_diagnosis(
    start_server, baseline_artifact, traffic
) -> None:  # type: ignore[no-untyped-def]
    server, target = await start_server(
        model_source=str(baseline_artifact), max_batch_size=8, max_queue_size=16
    )
    rows = traffic["streamed"][:70]
    nodes = [f"pcscf-q{i}" for i in range(20)]
    async with AsyncFaultprintClient(target) as client:
        await _enrol(client, traffic)
        call = client.stream_minutes()
        minutes = [START + m for m in range(70) for _ in nodes]
        request = minutes_request(1, NET, nodes * 70, minutes, np.repeat(rows, len(nodes), axis=0))
        await call.write(request)
        ack = await call.read()
        await call.done_writing()
    assert (ack.accepted, ack.diagnosed, ack.not_diagnosed) == (1400, 11 * 20, 59 * 20)
    assert server.monitor.stats.not_diagnosed == 59 * 20, "only the minutes before a full hour"


async def test_a_node_nobody_sends_to_expires_from_memory_and_redis(
    start_server, baseline_artifact, traffic, redis_url, redis_prefix
) -> None:  # type: ignore[no-untyped-def]
    server, target = await start_server(model_source=str(baseline_artifact), node_idle_expiry_s=1.0)
    rows = traffic["streamed"]
    async with AsyncFaultprintClient(target) as client:
        await _enrol(client, traffic)
        call = client.stream_minutes()
        await _send(call, 1, "pcscf-6", list(range(START, START + 61)), rows[:61])
        await call.done_writing()
    key, layout = (NET, "pcscf-6"), RedisLayout(redis_prefix)
    r = connect(redis_url)
    assert server.monitor.windows.slot(key) is not None and r.exists(layout.node_window(*key))
    await eventually(lambda: server.monitor.windows.slot(key) is None, timeout_s=5)
    assert key not in server.monitor.conditions and server.monitor.stats.expired_nodes == 1
    await eventually(lambda: not r.exists(layout.node_window(*key), layout.node_condition(*key)), timeout_s=5)
