"""The probe agent: streams per-minute rows from files an exporter writes, live, to any replica, losing none.

It reads row files (traffic/rows.py: .parquet or .csv; one file, or a directory whose new
files are picked up in name order), sends their minutes in time order over
ProbeService.StreamMinutes, and keeps every request until the server acknowledges it
(the server acknowledges once the minutes are in Redis). When the connection fails it
reconnects with back-off, to the next replica of its list in turn, and first resends
what was not acknowledged: the server counts what it already had as duplicates, so no
minute is lost and none is applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from faultprint.client.channels import ChannelSecurity, aio_channel
from faultprint.client.client import channel_options
from faultprint.v1 import probe_service_pb2, probe_service_pb2_grpc

log = logging.getLogger(__name__)

ROW_SUFFIXES = (".parquet", ".csv")
# A stream that ends with these is reopened (to the next replica); others are the caller's error.
_RECONNECT_ON = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNKNOWN,
})  # fmt: skip


def _ended() -> grpc.aio.AioRpcError:
    """A stream the server ended without a status error: reconnect, as after UNAVAILABLE."""
    metadata = grpc.aio.Metadata()
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, metadata, metadata, "the server ended the stream"
    )


@dataclass(frozen=True)
class AgentOptions:
    """What the probe agent reads and where it sends it."""

    # gRPC targets of the server's replicas, tried in turn after a failure.
    targets: tuple[str, ...]
    # A row file, or a directory an exporter writes row files into.
    source: Path
    # Node-minutes per request.
    batch_minutes: int = 500
    # Traffic minutes sent per second of wall time; 0 sends as fast as the server takes them.
    minutes_per_second: float = 0.0
    # Requests sent and not yet acknowledged before the agent waits.
    max_unacknowledged: int = 32
    # Keep watching a directory for new files (a live exporter) instead of stopping at its end.
    follow: bool = False
    # Seconds between looks at the directory when following it.
    poll_s: float = 1.0
    # First pause before reconnecting, doubled after each failure up to reconnect_max_s.
    reconnect_s: float = 0.2
    reconnect_max_s: float = 10.0
    # TLS, client certificate and bearer token; None: from FAULTPRINT_TLS_* and FAULTPRINT_TOKEN.
    security: ChannelSecurity | None = None


@dataclass
class AgentTally:
    """What the server acknowledged, summed."""

    requests: int = 0
    minutes: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    reordered: int = 0
    diagnosed: int = 0
    not_diagnosed: int = 0
    refused: int = 0
    reconnects: int = 0
    refusals: list[str] = field(default_factory=list)

    def add(self, ack: probe_service_pb2.StreamMinutesResponse) -> None:
        self.requests += 1
        for name in ("accepted", "duplicates", "late", "reordered", "diagnosed", "not_diagnosed"):
            setattr(self, name, getattr(self, name) + getattr(ack, name))
        self.refused += len(ack.refused)
        self.refusals += [r.message for r in ack.refused[: max(0, 5 - len(self.refusals))]]

    def summary(self) -> str:
        return (
            f"{self.minutes} minutes sent in {self.requests} acknowledged requests: {self.accepted} accepted "
            f"({self.reordered} out of order), {self.duplicates} duplicates, {self.late} late, "
            f"{self.refused} refused; {self.diagnosed} windows diagnosed, {self.not_diagnosed} not; "
            f"{self.reconnects} reconnects"
        )


def row_files(source: Path, seen: set[Path]) -> list[Path]:
    """Row files of source not yet seen, in name order."""
    if source.is_file():
        found = [source]
    else:
        found = sorted(p for p in source.iterdir() if p.suffix in ROW_SUFFIXES and p.is_file())
    return [p for p in found if p not in seen]


def requests_from_rows(path: Path, batch_minutes: int, first_sequence: int) -> Iterator[
    tuple[int, probe_service_pb2.StreamMinutesRequest]
]:  # fmt: skip
    """A row file's minutes in time order (node order within a minute), batch_minutes per request:
    (traffic minute of the request's last row, request)."""
    from faultprint.traffic.rows import read_rows

    rows = read_rows(path)
    order = np.lexsort((rows.node, rows.minute))
    packed = np.ascontiguousarray(rows.values[order], dtype="<f4")
    row_bytes = packed.shape[1] * 4
    raw = packed.tobytes()
    node, network, minute = rows.node[order], rows.network[order], rows.minute[order]
    sequence = first_sequence
    for start in range(0, len(order), batch_minutes):
        request = probe_service_pb2.StreamMinutesRequest(sequence=sequence)
        for i in range(start, min(start + batch_minutes, len(order))):
            request.minutes.add(network=str(network[i]), node=str(node[i]), minute=int(minute[i]),
                                packed_values=raw[i * row_bytes : (i + 1) * row_bytes])  # fmt: skip
        yield int(minute[min(start + batch_minutes, len(order)) - 1]), request
        sequence += 1


class ProbeAgent:
    def __init__(self, options: AgentOptions) -> None:
        if not options.targets:
            raise ValueError("the probe agent needs at least one server target")
        self.options = options
        self.tally = AgentTally()
        self._pending: OrderedDict[int, probe_service_pb2.StreamMinutesRequest] = OrderedDict()
        self._room = asyncio.Event()
        self._acked = asyncio.Event()

    async def run(self) -> AgentTally:
        """Sends everything the source holds (and, following, what arrives), then returns the tally."""
        requests = self._requests()
        attempt = 0
        target = 0
        finished = False
        while not finished:
            address = self.options.targets[target % len(self.options.targets)]
            try:
                finished = await self._session(address, requests)
                attempt = 0
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RECONNECT_ON:
                    raise
                pause = min(self.options.reconnect_s * 2**attempt, self.options.reconnect_max_s)
                log.warning("stream to %s ended (%s: %s); %d requests to resend; reconnecting in %.1f s",
                            address, exc.code().name, exc.details(), len(self._pending), pause)  # fmt: skip
                self.tally.reconnects += 1
                attempt += 1
                target += 1
                await asyncio.sleep(pause)
        return self.tally

    async def _session(
        self, address: str, requests: AsyncIterator[probe_service_pb2.StreamMinutesRequest]
    ) -> bool:
        """One connection: resend what is pending, then send from the source until it ends and
        every request is acknowledged (True)."""
        async with aio_channel(address, channel_options(True), self.options.security) as channel:
            call = probe_service_pb2_grpc.ProbeServiceStub(channel).StreamMinutes()
            reader = asyncio.create_task(self._read(call))
            try:
                for request in list(self._pending.values()):
                    await self._write(call, request, reader)
                while True:
                    # Room first: a request taken from the source is pending at once, so a
                    # stream that fails from here on loses none.
                    while len(self._pending) >= self.options.max_unacknowledged:
                        await self._wait(self._room, reader)
                    try:
                        request = await anext(requests)
                    except StopAsyncIteration:
                        break
                    self._pending[request.sequence] = request
                    self.tally.minutes += len(request.minutes)
                    await self._write(call, request, reader)
                while self._pending:
                    await self._wait(self._acked, reader)
                await call.done_writing()
                await reader
                return True
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    @staticmethod
    async def _write(
        call: grpc.aio.StreamStreamCall,
        request: probe_service_pb2.StreamMinutesRequest,
        reader: asyncio.Task[None],
    ) -> None:
        """Sends a request; a call the server has already ended raises its status (from the reader)."""
        try:
            await call.write(request)
        except asyncio.InvalidStateError:  # ended between two writes: its status says why
            await reader
            raise _ended() from None

    @staticmethod
    async def _wait(event: asyncio.Event, reader: asyncio.Task[None]) -> None:
        """Waits for event, or re-raises the reader's failure (the stream ended)."""
        event.clear()
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if reader in done:
            reader.result()
            raise _ended()

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        async for ack in call:
            if self._pending.pop(ack.sequence, None) is not None:
                self.tally.add(ack)
            self._room.set()
            if not self._pending:
                self._acked.set()

    async def _requests(self) -> AsyncIterator[probe_service_pb2.StreamMinutesRequest]:
        """Requests from the source's files, paced when asked; following a directory, forever."""
        seen: set[Path] = set()
        sequence = 1
        paced_from: tuple[float, int] | None = None
        while True:
            for path in row_files(self.options.source, seen):
                seen.add(path)
                for last_minute, request in requests_from_rows(path, self.options.batch_minutes, sequence):
                    sequence += 1
                    paced_from = await self._pace(last_minute, paced_from)
                    yield request
            if not (self.options.follow and self.options.source.is_dir()):
                return
            await asyncio.sleep(self.options.poll_s)

    async def _pace(self, minute: int, paced_from: tuple[float, int] | None) -> tuple[float, int]:
        """Sleeps until a request of traffic minute `minute` is due; returns the pacing origin."""
        if paced_from is None or self.options.minutes_per_second <= 0:
            return paced_from or (time.monotonic(), minute)
        start_s, start_minute = paced_from
        due = start_s + (minute - start_minute) / self.options.minutes_per_second
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        return paced_from
