"""Relays events from a network's outbox to the deployment's streams, so that no script spans two slots.

A script that changes a network (a reference case, a node's condition) appends the event
the deployment must hear to the network's outbox in the same call, so the change and
its event are written together or not at all. The writer then relays the outbox: it
takes the lease of the network's relay, copies the entries in order to the deployment's
streams ({P}:events, {P}:incidents), and deletes them from the outbox. Every replica
also sweeps the outboxes of all networks now and then, so entries a crashed writer left
are relayed by another. The copy is one script in the deployment's slot that also
records, per network, the newest outbox entry copied ({P}:outboxes:relayed), and skips
entries up to it: a relayer killed between the copy and the delete leaves entries that
the next relay deletes without copying them again. Outbox entry ids only grow (an
emptied outbox is kept, with its last id), so each event reaches its stream once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

import redis.exceptions

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.layout import RedisLayout

log = logging.getLogger(__name__)

# Entries copied per relay step; a network's outbox is relayed in steps until empty.
RELAY_BATCH = 256
# How long a relayer holds a network's relay, in ms: far above a step's few milliseconds,
# short enough that entries a crashed relayer left wait little.
RELAY_LEASE_MS = 5_000
# Outbox fields that address the entry (read by _COPY); the rest are the event's fields.
STREAM_FIELD, MAX_LEN_FIELD = b"stream", b"max_len"

# Lua that network scripts include: appends an event for the deployment stream named
# (events or incidents, as in RedisLayout), kept at about max_len entries there.
LUA_OUTBOX = """
local function outbox(key, stream, max_len, ...)
  redis.call('XADD', key, '*', 'stream', stream, 'max_len', max_len, ...)
end
"""

# KEYS: outbox, lease. ARGV: relayer, lease ms, count. The next entries, or false while
# another relayer holds the lease.
_TAKE = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return false end
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[3])
if #entries == 0 then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
return entries
"""
# KEYS: relayed, events, incidents (the deployment's slot). ARGV: network, then per entry
# its outbox id, its field count and fields (stream and max_len among them). Copies the
# entries newer than the network's last copied one; returns how many.
_COPY = """
local function newer(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end
local last = redis.call('HGET', KEYS[1], ARGV[1]) or '0-0'
local newest, copied, i = last, 0, 2
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  local stream, max_len, fields = KEYS[3], '0', {}
  for j = i + 2, i + 1 + n, 2 do
    local name, value = ARGV[j], ARGV[j + 1]
    if name == 'stream' then
      if value == 'events' then stream = KEYS[2] end
    elseif name == 'max_len' then
      max_len = value
    else
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  if newer(id, newest) then
    redis.call('XADD', stream, 'MAXLEN', '~', max_len, '*', unpack(fields))
    newest, copied = id, copied + 1
  end
  i = i + 2 + n
end
if newest ~= last then redis.call('HSET', KEYS[1], ARGV[1], newest) end
return copied
"""
# KEYS: outbox, lease. ARGV: relayer, then the ids relayed. The outbox stays when emptied,
# so that its next entry id is larger than every one relayed; its lease goes. Returns the
# entries left.
_DONE = """
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
local left = redis.call('XLEN', KEYS[1])
if left == 0 and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return left
"""

Entry = tuple[bytes, list[bytes]]


def outbox_address(stream: str, max_len: int) -> dict[Any, Any]:
    """The fields that address an outbox entry written outside a script (as LUA_OUTBOX does)."""
    return {STREAM_FIELD.decode(): stream, MAX_LEN_FIELD.decode(): max_len}


class Outbox:
    """The relay of one deployment's network outboxes, run by each replica and the trainer."""

    def __init__(self, client: AsyncRedis, layout: RedisLayout, relayer: str) -> None:
        self._redis = client
        self._layout = layout
        self._relayer = relayer
        self._take = client.register_script(_TAKE)
        self._done = client.register_script(_DONE)
        self._copy_script = client.register_script(_COPY)
        self.relayed = 0

    async def announce(self, networks: Sequence[str]) -> None:
        """Names networks whose outbox a script is about to write, for the sweep to find
        should the writer not relay it."""
        if networks:
            await self._redis.sadd(self._layout.outboxes, *networks)

    async def relay(self, network: str) -> int:
        """Copies the network's outbox to the deployment's streams until it is empty or another
        relayer holds it; returns the entries copied."""
        keys = [self._layout.outbox(network), self._layout.relay_lease(network)]
        copied = 0
        while True:
            taken = await self._take(keys=keys, args=[self._relayer, RELAY_LEASE_MS, RELAY_BATCH])
            if not taken:
                return copied
            entries = [(cast(bytes, entry_id), cast(list[bytes], fields)) for entry_id, fields in taken]
            fresh = await self._copy(network, entries)
            left = await self._done(keys=keys, args=[self._relayer, *(entry_id for entry_id, _ in entries)])
            copied += fresh
            self.relayed += fresh
            if not left:
                return copied

    async def _copy(self, network: str, entries: Sequence[Entry]) -> int:
        """Copies the entries to the deployment's streams, but none copied before; returns how many."""
        args: list[Any] = [network]
        for entry_id, flat in entries:
            args += [entry_id, len(flat), *flat]
        lay = self._layout
        return int(await self._copy_script(keys=[lay.relayed, lay.events, lay.incidents], args=args))

    async def sweep(self) -> int:
        """Relays every announced network's outbox that holds entries; returns the entries copied."""
        networks = sorted(
            m.decode() for m in cast(set[bytes], await self._redis.smembers(self._layout.outboxes))
        )
        if not networks:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for network in networks:
            pipe.xlen(self._layout.outbox(network))
        lengths = await pipe.execute()
        copied = 0
        for network, length in zip(networks, lengths, strict=True):
            if length:
                copied += await self.relay(network)
        if copied:
            log.info("relayed %d events that writers had left in network outboxes", copied)
        return copied


class OutboxSweep:
    """A replica's task that sweeps the outboxes every interval_s, riding out a Redis outage."""

    def __init__(self, outbox: Outbox, interval_s: float) -> None:
        self._outbox = outbox
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-sweep")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._outbox.sweep()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("outbox sweep skipped, Redis unavailable: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
