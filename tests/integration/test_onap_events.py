"""Incidents as ONAP ControlLoopEvents POSTed to a real HTTP topic on loopback: the documented schema,
ONSET and ABATED paired by requestID, in order, retried, dead-lettered, and taken over by another replica."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

from faultprint.registry.connection import connect, connect_async
from faultprint.registry.layout import RedisLayout
from faultprint.registry.outbox import Outbox
from faultprint.server.monitoring.node_store import EventWrite, NodeStore, NodeWrite
from faultprint.v1 import incident_service_pb2
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

NET = "net-onap"
SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schemas/control-loop-event.schema.json").read_text())
ONSET, ABATED, ACKNOWLEDGED = (
    incident_service_pb2.INCIDENT_EVENT_TYPE_ONSET,
    incident_service_pb2.INCIDENT_EVENT_TYPE_ABATED,
    incident_service_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED,
)


class Topic:
    """A DMaaP-style topic on loopback: records each JSON body POSTed; answers 503 to the first
    `unavailable` requests and 500 to every body that names `refused`."""

    def __init__(self, unavailable: int = 0, refused: str = "") -> None:
        self.bodies: list[dict] = []  # type: ignore[type-arg]
        self.requests = 0
        topic = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                topic.requests += 1
                if topic.requests <= unavailable or (refused and refused.encode() in body):
                    self.send_response(503 if topic.requests <= unavailable else 500)
                else:
                    topic.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/events/unauthenticated.DCAE_CL_OUTPUT"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def topic_factory():  # type: ignore[no-untyped-def]
    topics: list[Topic] = []

    def make(**kw: object) -> Topic:
        topics.append(Topic(**kw))  # type: ignore[arg-type]
        return topics[-1]

    yield make
    for t in topics:
        t.close()


async def _emit(redis_url: str, prefix: str, events: list[tuple[int, str, int]]) -> None:
    """Writes (type, node, onset minute) events through the node store, as the node monitor does."""
    client = await connect_async(redis_url)
    layout = RedisLayout(prefix)
    store = NodeStore(client, layout, Outbox(client, layout, "test"), 3600, 3600, 1000)
    for minute, (kind, node, onset) in enumerate(events):
        incident = incident_service_pb2.Incident(
            incident_id=f"{NET}/{node}/hss_unreachable@{onset}", network=NET, node=node, label="hss_unreachable",
            severity=incident_service_pb2.SEVERITY_MAJOR, model_version="m-1", reference_case_id="c1",
        )  # fmt: skip
        incident.start_time.FromSeconds(onset * 60)
        incident.explanation.from_normal.add(statistic="code_register_504", family="codes", departure=31.5)
        incident.explanation.families.append("codes")
        if kind == ABATED:
            incident.end_time.FromSeconds((onset + 90) * 60)
        event = incident_service_pb2.IncidentEvent(type=kind, incident=incident)
        name = incident_service_pb2.IncidentEventType.Name(kind).removeprefix("INCIDENT_EVENT_TYPE_")
        write = EventWrite(name, incident.incident_id, incident.SerializeToString(), event.SerializeToString(),
                           incident.label)  # fmt: skip
        await store.write([NodeWrite(NET, node, 1000 + minute, {}, events=[write])])
    await client.aclose()


def _validate(body: dict) -> None:  # type: ignore[type-arg]
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(body)


async def test_onset_and_abated_reach_the_topic_in_order_paired_and_as_documented_despite_a_busy_topic(
    start_server, artifact, redis_url, redis_prefix, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory(unavailable=3)
    server, _ = await start_server(
        model_source=str(artifact),
        onap_url=topic.url,
        onap_retry_backoff_s=0.01,
        onap_control_loop_name="CL-volte",
    )
    await _emit(redis_url, redis_prefix, [(ONSET, "pcscf-1", 100), (ONSET, "pcscf-2", 110),
                                          (ACKNOWLEDGED, "pcscf-1", 100), (ABATED, "pcscf-1", 100),
                                          (ABATED, "pcscf-2", 110)])  # fmt: skip
    await eventually(lambda: len(topic.bodies) == 4)
    for body in topic.bodies:
        _validate(body)
    seen = [(b["closedLoopEventStatus"], b["AAI"]["generic-vnf.vnf-name"]) for b in topic.bodies]
    assert seen == [("ONSET", "pcscf-1"), ("ONSET", "pcscf-2"), ("ABATED", "pcscf-1"), ("ABATED", "pcscf-2")]
    first, _, abated, _ = topic.bodies
    assert first["requestID"] == abated["requestID"] != topic.bodies[1]["requestID"]
    assert (
        first["closedLoopControlName"] == "CL-volte" and first["closedLoopAlarmStart"] == 100 * 60 * 1_000_000
    )
    assert abated["closedLoopAlarmEnd"] == 190 * 60 * 1_000_000
    assert first["additionalEventParams"]["faultprint.departures"] == "code_register_504=+31.5"
    assert topic.requests == 4 + 3, "each refusal was retried"
    await eventually(lambda: server.onap.published == 4)  # counted once the topic's answer is read
    assert server.onap.dead_letters == 0


async def test_an_event_the_topic_keeps_refusing_is_set_aside_and_the_rest_go_on(
    start_server, artifact, redis_url, redis_prefix, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory(refused="pcscf-bad")
    await start_server(model_source=str(artifact), onap_url=topic.url, onap_retry_backoff_s=0.01,
                       onap_max_attempts=3)  # fmt: skip
    await _emit(
        redis_url, redis_prefix, [(ONSET, "pcscf-1", 5), (ONSET, "pcscf-bad", 6), (ABATED, "pcscf-1", 5)]
    )
    await eventually(lambda: len(topic.bodies) == 2)
    r = connect(redis_url)
    layout = RedisLayout(redis_prefix)
    await eventually(lambda: r.hget(layout.onap_publisher, "dead_letters") == b"1")
    dead = r.xrange(layout.onap_dead_letters)
    assert len(dead) == 1 and b"pcscf-bad" in dead[0][1][b"body"] and dead[0][1][b"error"] == b"HTTP 500"
    assert [b["closedLoopEventStatus"] for b in topic.bodies] == ["ONSET", "ABATED"]
    assert topic.requests == 2 + 3


async def test_one_replica_publishes_and_another_takes_over_from_the_cursor_when_it_stops(
    start_server, artifact, redis_url, redis_prefix, topic_factory
) -> None:  # type: ignore[no-untyped-def]
    topic = topic_factory()
    settings = {"model_source": str(artifact), "onap_url": topic.url, "onap_lease_s": 1.0}
    first, _ = await start_server(**settings)
    second, _ = await start_server(**settings)
    await _emit(redis_url, redis_prefix, [(ONSET, f"pcscf-{i}", i) for i in range(3)])
    await eventually(lambda: len(topic.bodies) == 3)
    leader, other = (first, second) if first.onap.published else (second, first)
    assert other.onap.published == 0, "one replica publishes at a time"
    await leader.stop()
    await _emit(redis_url, redis_prefix, [(ABATED, f"pcscf-{i}", i) for i in range(3)])
    await eventually(lambda: len(topic.bodies) >= 6, timeout_s=15)
    statuses = [(b["closedLoopEventStatus"], b["AAI"]["generic-vnf.vnf-name"]) for b in topic.bodies]
    assert statuses[:3] == [("ONSET", f"pcscf-{i}") for i in range(3)]
    assert statuses[-3:] == [("ABATED", f"pcscf-{i}") for i in range(3)]
    assert other.onap.published >= 3
