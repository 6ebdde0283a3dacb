"""The supervisor's pure rules: restart pauses, worker command lines, GPU shares, and the worker's pipes."""

from __future__ import annotations

import asyncio
import os

import pytest

from faultprint.server.model.devices import worker_share
from faultprint.server.settings import ServerSettings, SettingsError
from faultprint.server.supervisor import (
    LIFELINE_FD_VARIABLE,
    READY_FD_VARIABLE,
    RestartPause,
    SupervisorLink,
    SupervisorOptions,
    worker_argv,
)


def test_restart_pause_grows_while_a_worker_keeps_dying_and_resets_after_a_long_run() -> None:
    pause = RestartPause(SupervisorOptions(restart_pause_min_s=1, restart_pause_max_s=5, stable_after_s=60))
    assert [pause.after_death(served_s=2) for _ in range(5)] == [1, 2, 4, 5, 5]
    assert pause.after_death(served_s=61) == 1
    assert pause.after_death(served_s=3) == 2


def test_a_worker_gets_the_supervisors_flags_then_its_index_port_and_metrics_port() -> None:
    settings = ServerSettings.from_args(
        ["--workers", "3", "--listen-address", "0.0.0.0:0", "--metrics-address", "127.0.0.1:9464",
         "--max-batch-size", "32"], env={}
    )  # fmt: skip
    argv = worker_argv(["--workers", "3", "--listen-address", "0.0.0.0:0", "--max-batch-size", "32"],
                       settings, index=2, port=50051)  # fmt: skip
    worker = ServerSettings.from_args(argv, env={})
    assert (worker.workers, worker.worker_index, worker.batching.max_batch_size) == (3, 2, 32)
    assert worker.listen_address == "0.0.0.0:50051"
    assert worker.metrics_address == "127.0.0.1:9466"
    assert settings.supervises and not worker.supervises


def test_worker_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="workers must be at least 1"):
        ServerSettings(workers=0)
    with pytest.raises(SettingsError, match="worker_index 2 is not a worker of 2"):
        ServerSettings(workers=2, worker_index=2)
    assert not ServerSettings(workers=1).supervises


@pytest.mark.parametrize(
    ("gpus", "worker", "share"),
    [
        (["g0", "g1", "g2", "g3"], (1, 2), ["g1", "g3"]),
        (["g0", "g1", "g2"], (0, 2), ["g0", "g2"]),
        (["g0"], (1, 2), ["g0"]),  # more workers than GPUs: they share
        (["g0", "g1"], (2, 3), ["g0"]),
        (["g0", "g1"], (-1, 1), ["g0", "g1"]),  # not a worker: every GPU
        ([], (0, 2), []),  # no GPU: the CPU serves
    ],
)
def test_each_worker_takes_its_share_of_the_gpus(
    gpus: list[str], worker: tuple[int, int], share: list[str]
) -> None:
    assert worker_share(gpus, worker) == share


def test_a_worker_tells_its_supervisor_it_serves_and_stops_when_the_supervisor_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready_read, ready_write = os.pipe()
    lifeline_read, lifeline_write = os.pipe()
    monkeypatch.setenv(READY_FD_VARIABLE, str(ready_write))
    monkeypatch.setenv(LIFELINE_FD_VARIABLE, str(lifeline_read))
    link = SupervisorLink.from_environment()
    assert READY_FD_VARIABLE not in os.environ  # not passed on to anything the worker starts

    async def run() -> None:
        lost = asyncio.Event()
        link.on_supervisor_lost(asyncio.get_running_loop(), lost.set)
        link.notify_ready()
        assert os.read(ready_read, 1) == b"1"
        await asyncio.sleep(0.05)
        assert not lost.is_set()
        os.close(lifeline_write)  # the supervisor dies
        await asyncio.wait_for(lost.wait(), 5)

    try:
        asyncio.run(run())
    finally:
        for fd in (ready_read, lifeline_read):
            os.close(fd)


def test_a_server_started_alone_has_no_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(READY_FD_VARIABLE, raising=False)
    monkeypatch.delenv(LIFELINE_FD_VARIABLE, raising=False)
    link = SupervisorLink.from_environment()
    link.notify_ready()  # nothing to tell, nothing raised

    async def run() -> None:
        link.on_supervisor_lost(asyncio.get_running_loop(), lambda: pytest.fail("no supervisor to lose"))
        await asyncio.sleep(0.01)

    asyncio.run(run())
