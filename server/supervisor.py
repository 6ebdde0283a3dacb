"""Several server workers on one port, so one replica uses every core of its machine.

A Python process runs Python on one core at a time. TensorFlow's compute leaves that
lock, but each window's gRPC read, decoding, batching and answer do not, so a server
with the small encoder, or with many probes, is bound by one core of Python however
many cores the machine has. gRPC's answer for Python servers is several processes
listening on one port through SO_REUSEPORT (on by default in grpcio): the kernel
spreads incoming connections over them.

Each worker is a full replica (its own event loop, model replica, Redis connections
and replica id), so hot swap, reference-case sync and node state need nothing new:
they already work across replicas sharing one Redis.

The supervisor imports neither TensorFlow nor the serving code. It reserves the port,
starts ``python -m faultprint.server --worker-index I`` for each worker, forwards SIGTERM and
SIGINT, and restarts a worker that dies after it started serving, after a pause that
grows while it keeps dying. A worker that dies before it serves (a bad setting, a
corrupt artifact) stops them all, with its exit code: every worker would fail alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from faultprint.server.settings import ServerSettings

log = logging.getLogger(__name__)

# Variables naming a worker's two pipes to its supervisor: the one it writes to once it
# serves, and the one whose end of file tells it the supervisor is gone.
READY_FD_VARIABLE = "FAULTPRINT_READY_FD"
LIFELINE_FD_VARIABLE = "FAULTPRINT_LIFELINE_FD"


@dataclass(frozen=True)
class SupervisorOptions:
    """How the supervisor restarts and stops its workers."""

    # Pause before restarting a worker that died, doubled at each death in a row.
    restart_pause_min_s: float = 1.0
    restart_pause_max_s: float = 30.0
    # A worker that served this long before dying is restarted after the shortest pause.
    stable_after_s: float = 60.0
    # How often the workers are checked, in s.
    poll_interval_s: float = 0.2
    # Time a stopping worker has beyond the server's own shutdown grace before it is killed.
    stop_margin_s: float = 15.0


@dataclass
class RestartPause:
    """The pause before a worker's next restart: short after a long run, growing while it keeps dying."""

    options: SupervisorOptions
    pause_s: float = 0.0

    def after_death(self, served_s: float) -> float:
        if served_s >= self.options.stable_after_s or self.pause_s == 0.0:
            self.pause_s = self.options.restart_pause_min_s
        else:
            self.pause_s = min(self.pause_s * 2, self.options.restart_pause_max_s)
        return self.pause_s


def with_port(address: str, port: int) -> str:
    return f"{address.rsplit(':', 1)[0]}:{port}"


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def worker_argv(argv: Sequence[str], settings: ServerSettings, index: int, port: int) -> list[str]:
    """The command line of worker index: the supervisor's own flags, then what differs
    (argparse keeps the last value of a flag given twice)."""
    metrics_port = port_of(settings.metrics_address) + index
    return [
        *argv,
        "--worker-index", str(index),
        "--listen-address", with_port(settings.listen_address, port),
        "--metrics-address", with_port(settings.metrics_address, metrics_port),
    ]  # fmt: skip


def reserve_port(address: str) -> socket.socket:
    """A socket bound to address with SO_REUSEPORT, held while the workers run: port 0
    becomes one fixed port that every worker, and every restarted worker, binds too.
    It never listens, so the kernel hands it no connections."""
    host = address.rsplit(":", 1)[0].strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host or "0.0.0.0", port_of(address)))
    return reserved


class SupervisorLink:
    """A worker's side of its pipes to the supervisor (a server started alone has none)."""

    def __init__(self, ready_fd: int | None, lifeline_fd: int | None) -> None:
        self._ready_fd = ready_fd
        self._lifeline_fd = lifeline_fd

    @classmethod
    def from_environment(cls) -> SupervisorLink:
        ready, lifeline = (os.environ.pop(name, None) for name in (READY_FD_VARIABLE, LIFELINE_FD_VARIABLE))
        return cls(int(ready) if ready else None, int(lifeline) if lifeline else None)

    def notify_ready(self) -> None:
        """Tells the supervisor this worker serves."""
        if self._ready_fd is None:
            return
        try:
            os.write(self._ready_fd, b"1")
            os.close(self._ready_fd)
        except OSError as exc:
            log.warning("could not tell the supervisor this worker serves: %s", exc)
        self._ready_fd = None

    def on_supervisor_lost(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        """Calls callback if the supervisor dies without stopping this worker (its end of
        the lifeline closes), so no worker outlives it holding the port."""
        if self._lifeline_fd is None:
            return
        fd = self._lifeline_fd

        def lost() -> None:
            loop.remove_reader(fd)
            log.error("the supervisor is gone; stopping")
            callback()

        loop.add_reader(fd, lost)


@dataclass
class Worker:
    """One worker process, its readiness pipe and its restart history."""

    index: int
    pause: RestartPause
    process: subprocess.Popen[bytes] | None = None
    ready_fd: int = -1
    lifeline_fd: int = -1
    ready: bool = False
    started_at: float = 0.0
    restart_at: float | None = None

    def start(self, argv: list[str]) -> None:
        """Starts the worker in a session of its own: a terminal's Ctrl-C or a group kill
        reaches the supervisor, which stops each worker once, in order."""
        ready_read, ready_write = os.pipe()
        lifeline_read, self.lifeline_fd = os.pipe()  # the supervisor holds the writing end
        os.set_blocking(ready_read, False)
        env = {**os.environ, READY_FD_VARIABLE: str(ready_write), LIFELINE_FD_VARIABLE: str(lifeline_read)}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faultprint.server", *argv], env=env,
                pass_fds=(ready_write, lifeline_read), start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(ready_write)
            os.close(lifeline_read)
        self.ready_fd, self.ready, self.started_at, self.restart_at = (
            ready_read,
            False,
            time.monotonic(),
            None,
        )
        log.info("worker %d started (pid %d)", self.index, self.process.pid)

    def check_ready(self) -> None:
        if self.ready or self.ready_fd < 0:
            return
        try:
            self.ready = os.read(self.ready_fd, 1) == b"1"
        except BlockingIOError:
            return
        if self.ready:
            log.info("worker %d (pid %d) serves", self.index, self.process.pid if self.process else -1)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def close_pipes(self) -> None:
        for fd in (self.ready_fd, self.lifeline_fd):
            if fd >= 0:
                os.close(fd)
        self.ready_fd = self.lifeline_fd = -1


class Supervisor:
    """Starts, watches, restarts and stops the workers of one replica."""

    def __init__(self, settings: ServerSettings, argv: Sequence[str], options: SupervisorOptions) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.options = options
        self.workers = [Worker(i, RestartPause(options)) for i in range(settings.workers)]
        self._stop_signal: int | None = None

    def run(self) -> int:
        """Serves until SIGTERM or SIGINT (exit 0), or until a worker fails to start (its code)."""
        with reserve_port(self.settings.listen_address) as reserved:
            port = reserved.getsockname()[1]
            log.info("supervising %d workers on port %d", len(self.workers), port)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            for worker in self.workers:
                worker.start(worker_argv(self.argv, self.settings, worker.index, port))
            try:
                code = self._watch(port)
            finally:
                self._stop_all()
        return code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    def _watch(self, port: int) -> int:
        while self._stop_signal is None:
            now = time.monotonic()
            for worker in self.workers:
                failed = self._check(worker, now, port)
                if failed is not None:
                    return failed
            time.sleep(self.options.poll_interval_s)
        log.info("stopping %d workers (%s)", len(self.workers), signal.Signals(self._stop_signal).name)
        return 0

    def _check(self, worker: Worker, now: float, port: int) -> int | None:
        """One worker's turn: readiness, death, restart. Returns an exit code to stop with."""
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                worker.start(worker_argv(self.argv, self.settings, worker.index, port))
            return None
        worker.check_ready()
        code = worker.exit_code()
        if code is None:
            return None
        worker.close_pipes()
        if not worker.ready:
            log.error(
                "worker %d exited with code %d before it served; stopping all workers", worker.index, code
            )
            return code or 1
        pause = worker.pause.after_death(now - worker.started_at)
        worker.restart_at = now + pause
        log.error("worker %d exited with code %d; restarting it in %.0f s", worker.index, code, pause)
        return None

    def _stop_all(self) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        stop_s = self.settings.shutdown_drain_s + self.settings.shutdown_grace_s + self.options.stop_margin_s
        deadline = time.monotonic() + stop_s
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
        for worker in self.workers:
            worker.close_pipes()


def supervise(settings: ServerSettings, argv: Sequence[str], options: SupervisorOptions | None = None) -> int:
    return Supervisor(settings, argv, options or SupervisorOptions()).run()
