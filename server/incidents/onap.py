"""Incidents as ONAP ControlLoopEvents, POSTed to a DMaaP-Message-Router-style HTTP topic for a policy engine.

Each ONSET and ABATED event of the incident stream becomes one VirtualControlLoopEvent
JSON (docs/incidents.md gives its schema): ONSET and ABATED of one incident share a
requestID, so the policy engine pairs them. Delivery is at least once and in stream
order (so in order per node): one replica at a time publishes, holding a lease in
Redis, and moves the deployment's cursor past an event only after the topic accepted
it. An event the topic keeps refusing (max_attempts tries with back-off) is set aside
on a dead-letter stream and counted, and publishing goes on. A replica that takes over
from a dead one resends from the cursor: the event that was in flight may arrive twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, cast

import httpx

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.layout import RedisLayout
from faultprint.v1 import incident_service_pb2

log = logging.getLogger(__name__)

# requestIDs are name-based UUIDs of the incident id, so every replica gives the same one.
_REQUEST_NAMESPACE = uuid.UUID("5c0f5a57-36f5-4a4e-9d0c-4a3f9b1e2f10")
_STATUS = {
    incident_service_pb2.INCIDENT_EVENT_TYPE_ONSET: "ONSET",
    incident_service_pb2.INCIDENT_EVENT_TYPE_ABATED: "ABATED",
}
# Renews the lease if this replica holds it, or takes it if nobody does (Redis's clock).
_HOLD_LEASE = """
local holder = redis.call('HGET', KEYS[1], 'holder')
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until_ms') or '0')
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if holder == ARGV[1] or not holder or until_ms < now_ms then
    redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'until_ms', now_ms + tonumber(ARGV[2]))
    return 1
end
return 0
"""
# Moves the cursor only for the lease holder.
_ADVANCE = """
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'cursor', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class OnapOptions:
    """The ONAP ControlLoopEvent publisher (off unless onap_url is set)."""

    # URL incidents are POSTed to, such as http://message-router:3904/events/unauthenticated.DCAE_CL_OUTPUT;
    # empty: no publishing.
    url: str = ""
    # closedLoopControlName of every event: the control loop the policy engine runs.
    control_loop_name: str = "ControlLoop-faultprint"
    # target_type of every event.
    target_type: str = "VNF"
    # target of every event: the AAI key whose value names the node.
    target: str = "generic-vnf.vnf-name"
    # Tries per event before it is set aside on the dead-letter stream.
    max_attempts: int = 5
    # Back-off before the first retry, doubled each try, in seconds.
    retry_backoff_s: float = 0.5
    # Seconds one POST may take.
    timeout_s: float = 5.0
    # Seconds a publishing replica holds its lease; another takes over after this.
    lease_s: float = 10.0

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"onap_url {self.url!r} must start with http:// or https://")
        if self.max_attempts < 1 or self.retry_backoff_s < 0 or self.timeout_s <= 0 or self.lease_s <= 0:
            raise ValueError(
                "onap_max_attempts must be at least 1, onap_retry_backoff_s >= 0, and onap_timeout_s "
                "and onap_lease_s positive"
            )


def control_loop_event(event: incident_service_pb2.IncidentEvent, options: OnapOptions) -> dict[str, Any]:
    """The VirtualControlLoopEvent JSON of an ONSET or ABATED event (docs/incidents.md)."""
    incident = event.incident
    body: dict[str, Any] = {
        "closedLoopControlName": options.control_loop_name,
        "closedLoopAlarmStart": incident.start_time.ToMicroseconds(),
        "closedLoopEventClient": "faultprint",
        "closedLoopEventStatus": _STATUS[event.type],
        "requestID": str(uuid.uuid5(_REQUEST_NAMESPACE, incident.incident_id)),
        "target_type": options.target_type,
        "target": options.target,
        "AAI": {
            options.target: incident.node,
            "generic-vnf.is-closed-loop-disabled": "false",
            "generic-vnf.prov-status": "ACTIVE",
        },
        "from": "DCAE",
        "version": "1.0.2",
        "additionalEventParams": _why(incident),
    }
    if event.type == incident_service_pb2.INCIDENT_EVENT_TYPE_ABATED:
        body["closedLoopAlarmEnd"] = incident.end_time.ToMicroseconds()
    return body


def _why(incident: incident_service_pb2.Incident) -> dict[str, str]:
    """The incident's diagnosis and explanation, as the string map ONAP carries."""
    shown = incident.explanation.from_normal
    return {
        "faultprint.incidentId": incident.incident_id,
        "faultprint.network": incident.network,
        "faultprint.label": incident.label,
        "faultprint.severity": incident_service_pb2.Severity.Name(incident.severity).removeprefix(
            "SEVERITY_"
        ),
        "faultprint.modelVersion": incident.model_version,
        "faultprint.referenceCaseId": incident.reference_case_id,
        "faultprint.families": ",".join(incident.explanation.families),
        "faultprint.departures": ",".join(f"{d.statistic}={d.departure:+.1f}" for d in shown),
    }


class OnapPublisher:
    """Publishes the incident stream to the topic while this replica holds the lease."""

    def __init__(self, client: AsyncRedis, layout: RedisLayout, options: OnapOptions, replica: str) -> None:
        self._redis = client
        self._layout = layout
        self.options = options
        self._replica = replica
        self._hold = client.register_script(_HOLD_LEASE)
        self._advance = client.register_script(_ADVANCE)
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.published = 0
        self.dead_letters = 0

    def start(self) -> None:
        if self.options.url:
            self._http = httpx.AsyncClient(timeout=self.options.timeout_s)
            self._task = asyncio.create_task(self._run(), name="onap-publisher")

    async def _run(self) -> None:
        while True:
            try:
                if await self._leading():
                    await self._publish_some()
                else:
                    await asyncio.sleep(self.options.lease_s / 3)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: try again later, from the stored cursor
                log.warning("ONAP publisher paused: %s", exc)
                await asyncio.sleep(1.0)

    async def _leading(self) -> bool:
        held = await self._hold(
            keys=[self._layout.onap_publisher], args=[self._replica, int(self.options.lease_s * 1000)]
        )
        return bool(held)

    async def _publish_some(self) -> None:
        state = self._layout.onap_publisher
        cursor = await self._redis.hget(state, "cursor") or b"0-0"
        block_ms = int(self.options.lease_s * 1000 / 3)
        replies = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
            await self._redis.xread({self._layout.incidents: cursor}, count=64, block=block_ms),
        )
        for _stream, entries in replies or ():
            for entry_id, fields in entries:
                if not await self._leading():
                    return
                await self._deliver(entry_id, fields)
                if not await self._advance(keys=[state], args=[self._replica, entry_id]):
                    return

    async def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        event = incident_service_pb2.IncidentEvent.FromString(fields[b"event"])
        if event.type not in _STATUS:
            return  # acknowledgements are not control-loop events
        body = json.dumps(control_loop_event(event, self.options)).encode()
        error = ""
        for attempt in range(self.options.max_attempts):
            if attempt:
                await asyncio.sleep(self.options.retry_backoff_s * 2 ** (attempt - 1))
            try:
                assert self._http is not None
                reply = await self._http.post(
                    self.options.url, content=body, headers={"Content-Type": "application/json"}
                )
                if reply.is_success:
                    self.published += 1
                    return
                error = f"HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        await self._dead_letter(entry_id, body, error)

    async def _dead_letter(self, entry_id: bytes, body: bytes, error: str) -> None:
        self.dead_letters += 1
        log.error(
            "ONAP topic refused event %s %d times (%s): set aside", entry_id, self.options.max_attempts, error
        )
        await self._redis.xadd(
            self._layout.onap_dead_letters, {"cursor": entry_id, "error": error, "body": body}, maxlen=100_000
        )
        await self._redis.hincrby(self._layout.onap_publisher, "dead_letters", 1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
