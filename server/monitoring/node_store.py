"""Streaming nodes' windows, conditions and incidents in Redis: written behind, restored by any replica.

What a replica has taken from a minute stream is written in one script call per few
hundred nodes of a network, at each flush: the ring rows that changed, the node's
life-cycle state, and the incident events its diagnoses caused, appended to the
network's outbox in the same call (and relayed from there to the incident stream,
registry/outbox.py), so that the stream never misses an event whose state was written
nor holds one whose state was lost. A probe's minutes are acknowledged only after the flush that holds
them; a probe that reconnects to another replica resends the rest, and that replica
resumes from Redis.

The state carries the newest minute whose diagnosis it applied; a write older than
what Redis holds (a replica that lost the node to another) changes nothing and is
counted. So a minute is applied, and its events emitted, once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.layout import RedisLayout
from faultprint.registry.outbox import LUA_OUTBOX, Outbox

log = logging.getLogger(__name__)

# Nodes per script call: bounds how long one call holds Redis.
MAX_NODES_PER_WRITE = 256
# Incidents kept per node (its history).
NODE_HISTORY = 200

# Runs within one network's slot. KEYS: the network's outbox and open incidents, then per
# node its window, condition and history. ARGV: window TTL ms, history TTL ms, stream
# length, then per node: minute, state, frontier, rows, (offset, bytes) per row, events,
# (kind, id, incident, event, network, node, label) per event. History entries are
# "id\n" .. incident. Events go to the outbox, for the deployment's incident stream.
_WRITE_NODES = (
    LUA_OUTBOX
    + """
local ttl, history_ttl, max_len = ARGV[1], ARGV[2], ARGV[3]
local open = KEYS[2]
local a = 4
local written, fenced = 0, 0
for k = 3, #KEYS, 3 do
    local window, condition, history = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    local minute = tonumber(ARGV[a])
    local state = ARGV[a + 1]
    local frontier = ARGV[a + 2]
    local rows = tonumber(ARGV[a + 3])
    a = a + 4
    local stored = tonumber(redis.call('HGET', condition, 'minute') or '-1')
    local apply = minute >= stored
    if apply then
        for _ = 1, rows do
            redis.call('SETRANGE', window, tonumber(ARGV[a]), ARGV[a + 1])
            a = a + 2
        end
        redis.call('HSET', condition, 'minute', minute, 'state', state, 'frontier', frontier)
        redis.call('PEXPIRE', window, ttl)
        redis.call('PEXPIRE', condition, ttl)
        written = written + 1
    else
        a = a + 2 * rows
        fenced = fenced + 1
    end
    local events = tonumber(ARGV[a])
    a = a + 1
    for _ = 1, events do
        if apply then
            local kind, id, incident = ARGV[a], ARGV[a + 1], ARGV[a + 2]
            local entry = id .. '\\n' .. incident
            if kind == 'ONSET' then
                redis.call('HSET', open, id, incident)
                redis.call('LPUSH', history, entry)
                redis.call('LTRIM', history, 0, {history} - 1)
            elseif kind == 'ABATED' then
                redis.call('HDEL', open, id)
                if redis.call('LLEN', history) > 0 then
                    redis.call('LSET', history, 0, entry)
                end
            end
            redis.call('PEXPIRE', history, history_ttl)
            outbox(KEYS[1], 'incidents', max_len, 'kind', kind, 'network', ARGV[a + 4], 'node', ARGV[a + 5],
                   'label', ARGV[a + 6], 'id', id, 'event', ARGV[a + 3])
        end
        a = a + 7
    end
end
return {written, fenced}
""".replace("{history}", str(NODE_HISTORY))
)


@dataclass(frozen=True, slots=True)
class EventWrite:
    """One incident event: kind ONSET, ABATED or ACKNOWLEDGED, the incident after it (an
    Incident), and the IncidentEvent as consumers read it."""

    kind: str
    incident_id: str
    incident: bytes
    event: bytes
    label: str


@dataclass
class NodeWrite:
    """What one flush writes for one node."""

    network: str
    node: str
    minute: int
    state: dict[str, Any]
    rows: list[tuple[int, bytes]] = field(default_factory=list)  # (byte offset, ring row)
    # The newest minute with every minute up to it settled: a replica that restores the node
    # drops ring rows newer than this (their senders resend them, unacknowledged).
    frontier: int = -1
    events: list[EventWrite] = field(default_factory=list)


@dataclass(frozen=True)
class Restored:
    """A node as Redis holds it: its ring's bytes, its life-cycle state (either may be None) and
    the frontier of its ring (None: keep every row)."""

    ring: bytes | None
    state: dict[str, Any] | None
    frontier: int | None = None


class NodeStore:
    def __init__(
        self, client: AsyncRedis, layout: RedisLayout, outbox: Outbox, ttl_s: float, history_ttl_s: float,
        stream_max_events: int,
    ) -> None:  # fmt: skip
        self._redis = client
        self._layout = layout
        self._write_nodes = client.register_script(_WRITE_NODES)
        self.outbox = outbox
        self._ttl_ms = int(ttl_s * 1000)
        self._history_ttl_ms = int(history_ttl_s * 1000)
        self._stream_max = stream_max_events
        # Node writes refused because Redis held a newer minute (another replica took the node).
        self.fenced = 0

    async def write(self, nodes: Sequence[NodeWrite]) -> None:
        """Writes nodes network by network, in script calls of MAX_NODES_PER_WRITE, then relays
        their events; raises if Redis fails (the caller keeps what was not acknowledged and
        writes it again)."""
        by_network: dict[str, list[NodeWrite]] = {}
        for n in nodes:
            by_network.setdefault(n.network, []).append(n)
        eventful = [network for network, group in by_network.items() if any(n.events for n in group)]
        await self.outbox.announce(eventful)
        for network, group in by_network.items():
            for start in range(0, len(group), MAX_NODES_PER_WRITE):
                keys, args = self._script_input(network, group[start : start + MAX_NODES_PER_WRITE])
                _written, fenced = await self._write_nodes(keys=keys, args=args)
                if fenced:
                    self.fenced += int(fenced)
                    log.warning("%d node writes skipped: Redis holds newer minutes (another replica)", fenced)
        for network in eventful:
            await self.outbox.relay(network)

    def _script_input(self, network: str, nodes: Sequence[NodeWrite]) -> tuple[list[str], list[Any]]:
        layout = self._layout
        keys: list[str] = [layout.outbox(network), layout.open_incidents(network)]
        args: list[Any] = [self._ttl_ms, self._history_ttl_ms, self._stream_max]
        for n in nodes:
            keys += [layout.node_window(network, n.node), layout.node_condition(network, n.node),
                     layout.node_incidents(network, n.node)]  # fmt: skip
            args += [n.minute, json.dumps(n.state, separators=(",", ":")), n.frontier, len(n.rows)]
            for offset, row in n.rows:
                args += [offset, row]
            args.append(len(n.events))
            for e in n.events:
                args += [e.kind, e.incident_id, e.incident, e.event, network, n.node, e.label]
        return keys, args

    async def load(self, nodes: Sequence[tuple[str, str]]) -> list[Restored]:
        """Each node's ring and state as Redis holds them, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for network, node in nodes:
                pipe.get(self._layout.node_window(network, node))
                pipe.hmget(self._layout.node_condition(network, node), ["state", "frontier"])
            replies = cast(list[Any], await pipe.execute())
        return [
            Restored(
                ring, json.loads(state) if state else None, int(frontier) if frontier is not None else None
            )
            for ring, (state, frontier) in zip(replies[::2], replies[1::2], strict=True)
        ]

    async def condition(self, network: str, node: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(self._layout.node_condition(network, node), "state")
        return json.loads(raw) if raw else None
