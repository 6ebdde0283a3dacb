"""The loop-lag monitor sees a loop that something holds, and says so in the log."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from faultprint.server.loop_lag import LoopLagMonitor, LoopLagOptions


async def test_a_blocked_loop_is_recorded_and_logged_as_a_stall(caplog: pytest.LogCaptureFixture) -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(lags.append, LoopLagOptions(interval_s=0.02, stall_log_ms=100.0))
    monitor.start()
    await asyncio.sleep(0.1)  # a few probes of a free loop
    with caplog.at_level(logging.WARNING, logger="faultprint.server.loop_lag"):
        time.sleep(0.25)  # holds the loop: the monitor's next timer is at most 20 ms away
        await asyncio.sleep(0.05)
    await monitor.close()
    # The timer was due at most 20 ms into the 250 ms block, so it ran at least 230 ms late.
    assert max(lags) >= 0.230  # seconds
    assert min(lags) < 0.100  # the free loop's probes were not stalls
    assert any("event loop stalled" in r.getMessage() for r in caplog.records)


async def test_close_stops_the_probes() -> None:
    lags: list[float] = []
    monitor = LoopLagMonitor(lags.append, LoopLagOptions(interval_s=0.01))
    monitor.start()
    await asyncio.sleep(0.05)
    await monitor.close()
    seen = len(lags)
    await asyncio.sleep(0.05)
    assert seen > 0 and len(lags) == seen
