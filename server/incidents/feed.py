"""Incidents as Redis keeps them: the event stream watched from a cursor, open incidents, histories, acks.

The node monitor writes incidents and their events together (monitoring/node_store.py);
any replica reads them here, so a watcher or an operator may use any replica. The
event stream is a Redis Stream, so new consumers can also read it directly with
consumer groups (docs/incidents.md); a stream id is the cursor WatchIncidents resumes from.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any, cast

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.layout import RedisLayout
from faultprint.registry.outbox import Outbox, outbox_address
from faultprint.server.monitoring.life_cycle import NodeLifeCycle
from faultprint.server.monitoring.node_store import NODE_HISTORY
from faultprint.server.rpc.errors import InvalidArgument, NotFound, OutOfRange
from faultprint.v1 import incident_service_pb2

_CURSOR = re.compile(r"^\d+-\d+$")
# Events read per XREAD, and how long one blocks (below the Redis client's socket timeout).
READ_COUNT = 512
BLOCK_MS = 1000


class IncidentFeed:
    def __init__(
        self, client: AsyncRedis, layout: RedisLayout, outbox: Outbox, stream_max_events: int
    ) -> None:
        self._redis = client
        self._layout = layout
        self._outbox = outbox
        self._stream_max = stream_max_events

    async def watch(
        self, network: str = "", node: str = "", label: str = "", cursor: str = ""
    ) -> AsyncIterator[incident_service_pb2.IncidentEvent]:
        """Events after cursor ("" now, "0" the oldest kept), filtered, until the caller stops."""
        last = await self._start(cursor)
        while True:
            replies = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                await self._redis.xread({self._layout.incidents: last}, count=READ_COUNT, block=BLOCK_MS),
            )
            for _stream, entries in replies or ():
                for entry_id, fields in entries:
                    last = entry_id
                    if _matches(fields, network, node, label):
                        yield _event(entry_id, fields)

    async def _start(self, cursor: str) -> bytes | str:
        stream = self._layout.incidents
        if cursor == "":
            newest = cast(
                list[tuple[bytes, dict[bytes, bytes]]], await self._redis.xrevrange(stream, count=1)
            )
            return newest[0][0] if newest else "0-0"
        if cursor == "0":
            return "0-0"
        if not _CURSOR.match(cursor):
            raise InvalidArgument(
                f"cursor {cursor!r} is not an event cursor: pass an IncidentEvent.cursor, "
                "'' (from now on) or '0' (from the oldest kept)",
                field="cursor",
            )
        oldest = cast(list[tuple[bytes, dict[bytes, bytes]]], await self._redis.xrange(stream, count=1))
        if oldest and _id(oldest[0][0]) > _id(cursor) and await self._trimmed_after(cursor):
            raise OutOfRange(
                f"events after cursor {cursor} are no longer kept (the stream keeps the newest "
                "incident_stream_max_events); resume from '0' and reconcile with ListOpenIncidents",
                field="cursor",
                reason="CURSOR_TRIMMED",
            )
        return cursor

    async def _trimmed_after(self, cursor: str) -> bool:
        info = cast(dict[str, Any], await self._redis.xinfo_stream(self._layout.incidents))
        deleted = info.get("max-deleted-entry-id")
        return deleted is not None and _id(deleted) > _id(cursor)

    async def open_incidents(self, network: str) -> list[incident_service_pb2.Incident]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self._layout.open_incidents(network)))
        incidents = [incident_service_pb2.Incident.FromString(v) for v in raw.values()]
        await self._with_acks(network, incidents)
        return sorted(incidents, key=lambda i: (i.start_time.seconds, i.incident_id))

    async def node_incidents(
        self, network: str, node: str, count: int
    ) -> list[incident_service_pb2.Incident]:
        entries = cast(
            list[bytes], await self._redis.lrange(self._layout.node_incidents(network, node), 0, count - 1)
        )
        incidents = [incident_service_pb2.Incident.FromString(e.split(b"\n", 1)[1]) for e in entries]
        await self._with_acks(network, incidents)
        return incidents

    async def acknowledge(
        self, network: str, incident_id: str, operator: str, note: str
    ) -> incident_service_pb2.Incident:
        """Records the acknowledgement and appends an ACKNOWLEDGED event; NotFound if unknown."""
        incident = await self._find(network, incident_id)
        acknowledgement = {"by": operator, "time_ns": time.time_ns(), "note": note}
        _apply_ack(incident, acknowledgement)
        event = incident_service_pb2.IncidentEvent(
            type=incident_service_pb2.INCIDENT_EVENT_TYPE_ACKNOWLEDGED, incident=incident
        )
        event.event_time.FromNanoseconds(acknowledgement["time_ns"])
        fields: dict[Any, Any] = {
            "kind": "ACKNOWLEDGED", "network": network, "node": incident.node, "label": incident.label,
            "id": incident_id, "event": event.SerializeToString(),
        }  # fmt: skip
        await self._outbox.announce([network])
        async with self._redis.pipeline(transaction=True) as pipe:  # one slot: the network's
            pipe.hset(self._layout.incident_acks(network), incident_id, json.dumps(acknowledgement))
            pipe.xadd(
                self._layout.outbox(network), {**outbox_address("incidents", self._stream_max), **fields}
            )
            await pipe.execute()
        await self._outbox.relay(network)
        return incident

    async def _find(self, network: str, incident_id: str) -> incident_service_pb2.Incident:
        raw = await self._redis.hget(self._layout.open_incidents(network), incident_id)
        if raw is not None:
            return incident_service_pb2.Incident.FromString(raw)
        parts = incident_id.split("/")
        if len(parts) == 3 and parts[0] == network:
            for incident in await self.node_incidents(network, parts[1], NODE_HISTORY):
                if incident.incident_id == incident_id:
                    return incident
        raise NotFound(
            f"network {network!r} has no incident {incident_id!r} (ids are network/node/label@minute)"
        )

    async def _with_acks(self, network: str, incidents: list[incident_service_pb2.Incident]) -> None:
        if not incidents:
            return
        ids = [i.incident_id for i in incidents]
        raw = await self._redis.hmget(self._layout.incident_acks(network), ids)
        for incident, ack in zip(incidents, raw, strict=True):
            if ack:
                _apply_ack(incident, json.loads(ack))

    async def condition(
        self, network: str, node: str, of_last_minutes: int
    ) -> incident_service_pb2.NodeCondition:
        raw = await self._redis.hget(self._layout.node_condition(network, node), "state")
        if raw is None:
            raise NotFound(
                f"node {node!r} of network {network!r} has no condition: no minute of it has been "
                "diagnosed over ProbeService.StreamMinutes (or it expired)"
            )
        life = NodeLifeCycle.from_dict(json.loads(raw), of_last_minutes)
        condition = incident_service_pb2.NodeCondition(
            network=network, node=node, last_minute=life.last_minute,
            recent_labels=[d.label for d in life.recent],
            label=life.incident.label if life.incident else "normal",
        )  # fmt: skip
        if life.since_minute >= 0:
            condition.since.FromSeconds(life.since_minute * 60)
        if life.incident is not None:
            incident_id = f"{network}/{node}/{life.incident.incident_id}"
            stored = await self._redis.hget(self._layout.open_incidents(network), incident_id)
            if stored is not None:
                condition.incident.CopyFrom(incident_service_pb2.Incident.FromString(stored))
        return condition


def _apply_ack(incident: incident_service_pb2.Incident, acknowledgement: dict[str, Any]) -> None:
    incident.acknowledged_by = acknowledgement["by"]
    incident.note = acknowledgement["note"]
    incident.acknowledge_time.FromNanoseconds(acknowledgement["time_ns"])


def _matches(fields: dict[bytes, bytes], network: str, node: str, label: str) -> bool:
    return (
        (not network or fields[b"network"].decode() == network)
        and (not node or fields[b"node"].decode() == node)
        and (not label or fields[b"label"].decode() == label)
    )


def _event(entry_id: bytes | str, fields: dict[bytes, bytes]) -> incident_service_pb2.IncidentEvent:
    event = incident_service_pb2.IncidentEvent.FromString(fields[b"event"])
    event.cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return event


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    millis, _, sequence = text.partition("-")
    return int(millis), int(sequence or 0)
