"""Event-loop lag: how late a replica's asyncio loop runs a timer it set.

Every read, answer and Redis write of a replica goes through one event loop. When
something holds the loop (a long garbage collection, a blocking call, cores taken by
other work), every call in flight waits, whatever the batcher planned. A task that
sleeps a fixed interval and measures how late it wakes shows such stalls, apart from
a slow encoder (faultprint.batch.compute) or a long queue (faultprint.queue.wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopLagOptions:
    """How often the loop is probed, and the lag worth a log line."""

    # Time between probes, in s.
    interval_s: float = 0.1
    # A probe this late, in ms, is logged as a stall.
    stall_log_ms: float = 100.0


class LoopLagMonitor:
    """Records, every interval, how late the loop woke the monitor's timer (in ms)."""

    def __init__(self, record_s: Callable[[float], None], options: LoopLagOptions | None = None) -> None:
        self._record_s = record_s
        self.options = options or LoopLagOptions()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self.options.interval_s
        while True:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            lag_ms = max(0.0, (loop.time() - due) * 1000)
            self._record_s(lag_ms / 1000)
            if lag_ms >= self.options.stall_log_ms:
                log.warning("event loop stalled: a %.0f ms timer ran %.0f ms late", interval_s * 1000, lag_ms)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
