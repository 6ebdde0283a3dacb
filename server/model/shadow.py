"""Shadow classification: what a candidate model would change, measured on live traffic before promotion.

While the registry names a candidate, each replica holds it next to the stable
version (with every reference case re-embedded by it) and passes a sample of the
windows it classified, with the stable version's diagnosis, to this shadow. A
background task classifies them again with the candidate, in small chunks on the
first device's thread between serving batches, and counts agreement: windows seen,
same diagnosis, and each change of diagnosis as "stable -> candidate" (a diagnosis
is the nearest case's label, or "unknown" beyond the threshold). The counts are
added to the candidate's Redis hash every flush interval, summed over all replicas,
for ``faultprint-trainer status``.

The serving path pays only for the sampling: it never waits for the candidate, and
when the candidate falls behind, windows are not sampled rather than queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis.exceptions

from faultprint.registry.connection import AsyncRedis
from faultprint.registry.layout import RedisLayout
from faultprint.server.model.host import ModelHost, ServingState
from faultprint.server.references.index import Match

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
WINDOWS = "windows"
SAME = "same"


@dataclass(frozen=True)
class ShadowOptions:
    """How much live traffic a candidate sees, and how its agreement is reported."""

    # Share of classified windows that the candidate classifies too (0 turns shadowing off).
    sample_rate: float = 0.05
    # Sampled windows waiting for the candidate; beyond this, windows are not sampled.
    max_pending_windows: int = 512
    # Windows the candidate embeds per call on the device thread.
    chunk_windows: int = 32
    # How often the agreement counts are added to Redis, in seconds.
    flush_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"shadow sample_rate must be in [0, 1], got {self.sample_rate}")
        if min(self.max_pending_windows, self.chunk_windows) < 1 or self.flush_interval_s <= 0:
            raise ValueError(
                "shadow max_pending_windows, chunk_windows and flush_interval_s must be positive"
            )


def diagnosis(match: Match) -> str:
    return UNKNOWN if match.verdict == UNKNOWN else match.label


def agreement_counts(stable: Sequence[str], candidate: Sequence[str]) -> Counter[str]:
    """Redis hash increments for pairs of diagnoses: windows, same, and 'a>b' per change."""
    counts: Counter[str] = Counter({WINDOWS: len(stable)})
    for a, b in zip(stable, candidate, strict=True):
        if a == b:
            counts[SAME] += 1
        else:
            counts[f"{a}>{b}"] += 1
    return counts


class Classified(Protocol):
    """A classified request, as the batch function holds it."""

    @property
    def network(self) -> str | None: ...

    @property
    def values(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class _Sample:
    network: str
    values: np.ndarray
    stable: str


class Shadow:
    """Samples classified windows and classifies them again with the host's candidate."""

    def __init__(self, host: ModelHost, client: AsyncRedis, layout: RedisLayout,
                 options: ShadowOptions, seed: int | None = None) -> None:  # fmt: skip
        self._host = host
        self._redis = client
        self._layout = layout
        self.options = options
        self._rng = np.random.default_rng(seed)
        self._pending: deque[_Sample] = deque()
        self._wake = asyncio.Event()
        # Counts not yet added to Redis, per candidate version.
        self._unflushed: dict[str, Counter[str]] = {}
        self.skipped = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()

    def start(self) -> None:
        # The classifier first: close() cancels it, and lets the flusher end by itself.
        self._tasks = [
            asyncio.create_task(self._classify_loop(), name="shadow-classify"),
            asyncio.create_task(self._flush_loop(), name="shadow-flush"),
        ]

    async def close(self) -> None:
        """Stops classifying, lets a running write of the counts finish, and writes the rest."""
        self._closing.set()
        if self._tasks:
            self._tasks[0].cancel()  # the classifier; the flusher ends after its last write
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush()

    def offer(self, requests: Sequence[Classified], matches: Sequence[Match | None]) -> None:
        """Called on the event loop after each batch; samples some of its classified windows."""
        if self._host.candidate is None or self.options.sample_rate <= 0:
            return
        picked = np.flatnonzero(self._rng.random(len(matches)) < self.options.sample_rate)
        for i in picked.tolist():
            request, match = requests[i], matches[i]
            if request.network is None or match is None:
                continue
            if len(self._pending) >= self.options.max_pending_windows:
                self.skipped += 1
                continue
            self._pending.append(_Sample(request.network, request.values, diagnosis(match)))
        if len(picked):
            self._wake.set()

    async def _classify_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                chunk = [
                    self._pending.popleft()
                    for _ in range(min(len(self._pending), self.options.chunk_windows))
                ]
                candidate = self._host.candidate
                if candidate is None:
                    self._pending.clear()
                    break
                try:
                    await self._classify(candidate, chunk)
                except Exception:
                    log.exception(
                        "shadow classification with %s failed; the chunk is skipped", candidate.version
                    )

    async def _classify(self, candidate: ServingState, chunk: list[_Sample]) -> None:
        loop = asyncio.get_running_loop()
        windows = np.stack([s.values for s in chunk])
        embeddings = await loop.run_in_executor(self._host.executor, candidate.runner.embed, windows)
        threshold = candidate.runner.metadata.distance_threshold
        stable, shadowed = [], []
        for network in {s.network for s in chunk}:
            index = candidate.index.get(network)
            if index is None:
                continue
            rows = [i for i, s in enumerate(chunk) if s.network == network]
            for row, match in zip(rows, index.match_many(embeddings[rows], [1] * len(rows), threshold),
                                  strict=True):  # fmt: skip
                stable.append(chunk[row].stable)
                shadowed.append(diagnosis(match))
        self._unflushed.setdefault(candidate.version, Counter()).update(agreement_counts(stable, shadowed))

    async def _flush_loop(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.options.flush_interval_s)
            await self._flush()

    async def _flush(self) -> None:
        if not self._unflushed:
            return
        counts, self._unflushed = self._unflushed, {}
        try:
            pipe = self._redis.pipeline(transaction=False)
            for version, increments in counts.items():
                for name, n in increments.items():
                    pipe.hincrby(self._layout.model_shadow(version), name, n)
            await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not record shadow agreement (%s); keeping the counts for the next flush", exc)
            for version, increments in counts.items():
                self._unflushed.setdefault(version, Counter()).update(increments)
