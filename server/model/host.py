"""The serving state: the model version and the reference index built with it, swapped as one.

A batch reads the state once, so every request in it is embedded and matched under
one version. A new version is loaded on every device, warmed at every batch size and
used to re-embed every reference case off the serving path: on loader threads of
its own, on CPU time the serving threads leave where the platform allows, one batch at a
time per thread, so the devices' serving threads never queue behind it. The devices are
warmed side by side, one loader thread each (two CPU devices, original encoder: 24-25 s
against 34 s in turn; benchmarks/archive/2026-11-22.md). Only then does the swap happen,
in one assignment. Batches already running keep the old state until they finish.

A candidate version (rolled out in shadow, see server/model/shadow.py) is held next to the
serving one, on the first device only, with its own index: every reference case is
embedded by it too, and enrolments and deletions reach both indexes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from faultprint.encoder.artifact import ArtifactError
from faultprint.server.model.runner import ModelRunner, RunnerOptions, time_graphs, warm_alike
from faultprint.server.references.index import NORMAL_LABEL, CaseEmbeddings, ReferenceIndex
from faultprint.server.references.store import LoadedCase, ReferenceStore, StoredCase, embedding_space
from faultprint.server.rpc.errors import FailedPrecondition, Unavailable
from faultprint.traffic.baseline import NetworkBaseline

log = logging.getLogger(__name__)

# Longest a batch started on a replaced version is expected to run, in seconds.
_OLD_VERSION_DRAIN_S = 2.0
# Niceness of the thread that loads incoming versions (higher: yields the CPU to serving).
_LOADER_NICE = 10
# Reference windows are embedded in chunks no larger than this.
_EMBED_CHUNK = 256
# Windows of unembedded cases gathered for one embed call when a network is indexed
# (4096 windows of 60 x 129 float32 are 127 MB).
_EMBED_GROUP_WINDOWS = 4096


@dataclass(frozen=True)
class ServingState:
    # One replica of the version per device, in device order.
    runners: tuple[ModelRunner, ...]
    index: ReferenceIndex
    # Seconds per batch of each warmed size, as warm-up timed them (seeds the batch scheduler's
    # running estimate when this version starts to serve).
    batch_seconds: Mapping[int, float] = field(default_factory=dict)

    @property
    def runner(self) -> ModelRunner:
        """The first device's replica: metadata, and reference embeddings."""
        return self.runners[0]

    @property
    def version(self) -> str:
        return self.runner.version


class ModelHost:
    """Owns the current ServingState, one worker thread per device, and every change to either."""

    def __init__(
        self,
        store: ReferenceStore,
        warm_batch_sizes: Iterable[int],
        devices: Iterable[str] = ("/CPU:0",),
        runner_options: RunnerOptions | None = None,
        freeze_gc: bool = False,
    ) -> None:
        """freeze_gc keeps loaded models out of the garbage collector's way (see
        _settle_memory); only for a process that runs one server: freezing is process-wide."""
        self.store = store
        self.current: ServingState | None = None
        # The candidate version that shadows the serving one, if the registry names one.
        self.candidate: ServingState | None = None
        # Serialises changes to the state (enrolment, deletion, swaps); never taken by classify.
        self.lock = asyncio.Lock()
        self._warm_sizes = tuple(warm_batch_sizes)
        self.devices = tuple(devices)
        self._runner_options = runner_options or RunnerOptions()
        # One thread per device runs its batches in order; TensorFlow releases the GIL inside.
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"encoder-{i}")
            for i in range(len(self.devices))
        ]
        # One thread per device copies the next batch to it while the current one computes
        # (used on GPUs; threads start only when first used).
        self.stagers = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stager-{i}")
            for i in range(len(self.devices))
        ]
        # Load, warm and re-embed incoming versions, beside the serving threads: one per
        # device warms that device's replica; the first also loads and re-embeds.
        self.loaders = [
            ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"model-loader-{i}", initializer=_lower_priority
            )
            for i in range(len(self.devices))
        ]
        self.loader = self.loaders[0]
        self._memory_task: asyncio.Task[None] | None = None
        self.freeze_gc = freeze_gc
        # Set while the reference store has lost the cases this replica holds (see
        # server/model/replica_sync.py): what vanished, and how to restore it. Writes are refused.
        self.store_lost: str | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The first device's thread, which embeds reference cases."""
        return self.executors[0]

    def require(self) -> ServingState:
        state = self.current
        if state is None:
            raise Unavailable(
                "no model is loaded yet; publish one with `faultprint-trainer publish`", reason="NO_MODEL"
            )
        return state

    async def embed(
        self, runner: ModelRunner, windows: np.ndarray, executor: ThreadPoolExecutor | None = None
    ) -> np.ndarray:
        """Embeddings of windows in chunks, on executor (default: the first device's serving thread)."""
        loop = asyncio.get_running_loop()
        chunks = [
            await loop.run_in_executor(executor or self.executor, runner.embed, windows[i : i + _EMBED_CHUNK])
            for i in range(0, len(windows), _EMBED_CHUNK)
        ]
        return np.concatenate(chunks)

    async def load(self, artifact_dir: Path) -> ServingState:
        """Loads, checks and warms a version, re-embeds every reference case, then swaps."""
        loop = asyncio.get_running_loop()
        runners = [
            await loop.run_in_executor(self.loader, ModelRunner, artifact_dir, device, self._runner_options)
            for device in self.devices
        ]
        runner = runners[0]
        async with self.lock:
            old = self.current
            if old is not None:
                self._check_compatible(old.runner, runner)
            # A new version of the same shape keeps the serving version's graph per size:
            # swaps happen under load, where only the chosen graph need be compiled and timed.
            keep = old.runner.graph_choices() if old and runner.same_graphs_as(old.runner) else {}
            batch_seconds = await self._warm(runners, self._warm_sizes, keep)
            index = await self._build_index(runner)
            self.current = ServingState(tuple(runners), index, batch_seconds)
            if self.candidate is not None and self.candidate.version == runner.version:
                self.candidate = None  # promoted: it serves now
        log.info(
            "serving model %s (was %s), %d networks",
            runner.version,
            old and old.version,
            len(index.networks()),
        )
        had_old = old is not None
        del old
        if self.freeze_gc:
            self._memory_task = asyncio.create_task(self._settle_memory(had_old))
        return self.current

    async def load_candidate(self, artifact_dir: Path) -> ServingState:
        """Loads a version to shadow the serving one: checked, warmed, references re-embedded."""
        loop = asyncio.get_running_loop()
        runner = await loop.run_in_executor(
            self.loader, ModelRunner, artifact_dir, self.devices[0], self._runner_options
        )
        async with self.lock:
            if self.current is not None:
                self._check_compatible(self.current.runner, runner)
            await self._warm([runner], self._warm_sizes[:1])
            self.candidate = ServingState((runner,), await self._build_index(runner))
        log.info(
            "shadowing candidate model %s next to %s", runner.version, self.current and self.current.version
        )
        return self.candidate

    def drop_candidate(self) -> None:
        if self.candidate is not None:
            log.info("no longer shadowing candidate model %s", self.candidate.version)
            self.candidate = None

    def _states(self) -> list[ServingState]:
        """The serving state and the candidate's, whose indexes must both follow every change."""
        return [s for s in (self.current, self.candidate) if s is not None]

    async def _settle_memory(self, after_swap: bool) -> None:
        """Keeps the model's objects out of the garbage collector's way.

        A loaded TensorFlow model is some 300,000 Python objects; a full collection over
        them stalls the event loop for about 160 ms on two CPU cores, a tail-latency
        spike for every request in flight. gc.freeze() moves them out of the collector's
        reach. After a swap, once the batches still running on the old version have
        finished, the old version's objects are unfrozen and collected, then the rest is
        frozen again; that one collection is the only pause.
        """
        if after_swap:
            await asyncio.sleep(_OLD_VERSION_DRAIN_S)
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    async def _warm(
        self, runners: Sequence[ModelRunner], sizes: Iterable[int], keep: Mapping[int, bool] | None = None
    ) -> dict[int, float]:
        """Prepares one replica per device side by side, each on its own loader thread, one
        batch size per call; then times the candidate graphs (model_runner.time_graphs: a
        lone request on the first device alone, larger batches on every device at once, each
        on its loader thread) and puts every replica on the faster one at each size
        (model_runner.warm_alike). Returns the seconds per size. A size in keep warms only
        the graph keep names for it (True: XLA)."""
        loop = asyncio.get_running_loop()
        sizes, keep = tuple(sizes), keep or {}

        async def prepared(runner: ModelRunner, loader: ThreadPoolExecutor) -> None:
            for size in sizes:
                await loop.run_in_executor(loader, runner.prepare, size, keep.get(size))

        pairs = zip(runners, self.loaders, strict=False)
        await asyncio.gather(*(prepared(runner, loader) for runner, loader in pairs))
        timed = {
            size: await loop.run_in_executor(
                self.loader, time_graphs, runners, size, keep.get(size), self.loaders[1:]
            )
            for size in sizes
        }
        return warm_alike(runners, timed)

    async def reload_references(self) -> None:
        """Rebuilds the current version's index from Redis (at start-up and after a lost connection)."""
        async with self.lock:
            state, candidate = self.current, self.candidate
            if state is not None:
                self.current = replace(state, index=await self._build_index(state.runner))
            if candidate is not None:
                self.candidate = replace(candidate, index=await self._build_index(candidate.runner))

    @staticmethod
    def _check_compatible(old: ModelRunner, new: ModelRunner) -> None:
        a, b = old.metadata, new.metadata
        if (a.steps, a.features, a.feature_names) != (b.steps, b.features, b.feature_names):
            raise ArtifactError(
                f"version {b.version} expects ({b.steps} steps, {b.features} features) with other "
                f"feature names than the serving {a.version} ({a.steps}, {a.features}); probes would break"
            )

    async def _build_index(self, runner: ModelRunner) -> ReferenceIndex:
        index = ReferenceIndex(runner.version)
        for network in await self.store.networks():
            await self._index_network(runner, index, network)
        return index

    async def _index_network(
        self, runner: ModelRunner, index: ReferenceIndex, network: str, case_ids: Sequence[str] | None = None
    ) -> None:
        """Indexes a network's cases (all, or only case_ids) under runner's version.

        For a model that reads network baselines, a normal case among them changes the
        network's baseline, so the whole network is re-learned (see _rebaseline).
        """
        if not runner.metadata.network_baseline:
            loaded = await self.store.load_network(network, runner.version, case_ids)
            index.put_many(network, await self._embed_loaded(runner, network, loaded, runner.version, None))
            return
        current = index.baselines.get(network)
        if case_ids is None or current is None:
            await self._rebaseline(runner, index, network)
            return
        baseline, space = current
        loaded = await self.store.load_network(network, space, case_ids)
        if any(case.label == NORMAL_LABEL for case, _, _ in loaded):
            await self._rebaseline(runner, index, network)
            return
        index.put_many(network, await self._embed_loaded(runner, network, loaded, space, baseline))

    async def add_traffic(self, network: str, windows: np.ndarray, replace: bool) -> int:
        """Stores unlabelled windows of a network's traffic for its baseline (see _rebaseline)
        and re-learns the baseline of every state that reads baselines; returns the batches kept."""
        async with self.lock:
            state = self.require()
            if not state.runner.metadata.network_baseline:
                raise FailedPrecondition(
                    f"model {state.version} reads windows as they are: it learns no network baseline"
                )
            self._require_store()
            kept = await self.store.add_traffic(network, windows, replace)
            await self._rebaseline_everywhere(network)
            return kept

    async def rebaseline(self, network: str) -> None:
        """Re-learns a network's baseline (another replica changed its traffic)."""
        async with self.lock:
            await self._rebaseline_everywhere(network)

    async def _rebaseline_everywhere(self, network: str) -> None:
        for state in self._states():
            if state.runner.metadata.network_baseline:
                await self._rebaseline(state.runner, state.index, network)

    async def _rebaseline(self, runner: ModelRunner, index: ReferenceIndex, network: str) -> None:
        """Learns the network's baseline from the windows of its normal cases and of the
        unlabelled traffic added for it (robust statistics: the faults in a day of traffic move
        neither median nor interquartile range far; each statistic's normal range comes from
        the normal cases alone), stores it, and re-indexes every case of
        the network against it (embeddings already stored for this baseline are reused). A
        network with cases but none normal cannot be matched: it is marked as without a
        baseline until a normal case is enrolled."""
        cases = await self.store.list_cases(network)
        windows, normal_cases = await self.store.normal_windows(network, cases)
        traffic = await self.store.traffic_windows(network)
        previous = index.baselines.get(network)
        if windows is None:
            index.drop_network(network)
            if cases:
                index.without_baseline.add(network)
                log.warning("network %s has %d reference cases but none labelled normal: its windows cannot "
                            "be read against its normal traffic until a normal case is enrolled",
                            network, len(cases))  # fmt: skip
            return
        traffic_count = 0 if traffic is None else len(traffic)
        source = windows if traffic is None else np.concatenate([windows, traffic])
        # Percentiles over a day of a network's minutes take a tenth of a second: off the loop.
        baseline = await asyncio.get_running_loop().run_in_executor(
            self.loader, NetworkBaseline.fit, source, windows
        )
        space = embedding_space(runner.version, baseline)
        await self.store.save_baseline(network, runner.version, baseline, normal_cases, traffic_count, space)
        loaded = await self.store.load_network(network, space)
        embedded = await self._embed_loaded(runner, network, loaded, space, baseline)
        index.drop_network(network)  # one step: no await between dropping and putting back
        index.baselines[network] = (baseline, space)
        index.put_many(network, embedded)
        if previous is not None and previous[1] != space:
            await self.store.drop_embeddings(network, previous[1])
        log.info("network %s: baseline of %d minutes from %d normal cases under %s; %d cases re-indexed",
                 network, baseline.minutes, normal_cases, runner.version, len(embedded))  # fmt: skip

    async def _embed_loaded(
        self, runner: ModelRunner, network: str, loaded: list[LoadedCase], space: str,
        baseline: NetworkBaseline | None,
    ) -> list[CaseEmbeddings]:  # fmt: skip
        """The loaded cases' embeddings, computing (and storing under space) those not stored
        yet, many cases per encoder call; windows are read against baseline when given."""
        fresh: dict[str, np.ndarray] = {}
        unseen = [(case, windows) for case, windows, embeddings in loaded if embeddings is None]
        for group in _groups_of_windows(unseen, _EMBED_GROUP_WINDOWS):
            windows = np.concatenate([w for _, w in group])
            if baseline is not None:
                windows = await asyncio.get_running_loop().run_in_executor(
                    self.loader, baseline.normalise, windows
                )
            embedded = await self.embed(runner, windows, self.loader)
            splits = np.cumsum([len(w) for _, w in group])[:-1]
            for (case, _), part in zip(group, np.split(embedded, splits), strict=True):
                fresh[case.case_id] = part
        await self.store.store_embeddings(network, space, fresh)
        return [
            CaseEmbeddings(case.case_id, case.label, fresh[case.case_id] if emb is None else emb)
            for case, _, emb in loaded
        ]

    async def add_stored_cases(self, network: str, case_ids: Sequence[str]) -> None:
        """Indexes cases another replica created, embedding them under this replica's version if needed."""
        async with self.lock:
            await self._index_stored(network, case_ids)

    async def _index_stored(self, network: str, case_ids: Sequence[str]) -> None:
        for state in self._states():
            await self._index_network(state.runner, state.index, network, case_ids)

    async def enrol(
        self, network: str, case_id: str, label: str, description: str, windows: np.ndarray,
        request_id: str = "",
    ) -> StoredCase:  # fmt: skip
        """Creates a case; it is in this replica's index before this returns.

        A request id seen before returns the case it created, indexed here too: the first
        attempt may have been stored although its caller (or this replica) never heard back.
        """
        async with self.lock:
            state = self.require()
            self._require_store()
            if state.runner.metadata.network_baseline and label == NORMAL_LABEL:
                # The network's baseline changes: every state re-learns it and re-indexes the network.
                case, created = await self.store.create(
                    network, case_id, label, description, windows, "", None, request_id
                )
                await self._index_stored(network, [case.case_id])
                return case
            space, embeddings = await self._embed_new(state, network, windows)
            case, created = await self.store.create(
                network, case_id, label, description, windows, space, embeddings, request_id
            )
            if not created:
                await self._index_stored(network, [case.case_id])
                return case
            state.index.put(network, CaseEmbeddings(case.case_id, label, embeddings))
            candidate = self.candidate
            if candidate is not None and _reads(candidate, network):
                space, shadow = await self._embed_new(candidate, network, windows)
                await self.store.store_embeddings(network, space, {case.case_id: shadow})
                candidate.index.put(network, CaseEmbeddings(case.case_id, label, shadow))
            return case

    async def _embed_new(
        self, state: ServingState, network: str, windows: np.ndarray
    ) -> tuple[str, np.ndarray]:
        """(embedding space, embeddings) of a new case's windows under state's version; for a model
        that reads network baselines, against the network's baseline, which must exist."""
        if not state.runner.metadata.network_baseline:
            return state.version, await self.embed(state.runner, windows)
        entry = state.index.baselines.get(network)
        if entry is None:
            raise FailedPrecondition(
                f"network {network!r} has no normal reference case yet: model {state.version} reads each "
                "window against its network's normal traffic, so enrol a normal case first (an hour to a "
                "day of its windows)"
            )
        baseline, space = entry
        return space, await self.embed(state.runner, baseline.normalise(windows))

    async def remove(self, network: str, case_id: str, *, stored: bool) -> None:
        """Deletes a case (from Redis too unless another replica already did)."""
        async with self.lock:
            if not stored:
                self._require_store()
                await self.store.delete(network, case_id)
            for state in self._states():
                was_normal = state.index.label_of(network, case_id) == NORMAL_LABEL
                state.index.remove(network, case_id)
                if was_normal and state.runner.metadata.network_baseline:
                    await self._rebaseline(state.runner, state.index, network)

    def _require_store(self) -> None:
        if self.store_lost is not None:
            raise FailedPrecondition(
                f"reference cases cannot change now: {self.store_lost}", reason="STORE_LOST"
            )

    def indexes(self, network: str, case_id: str) -> bool:
        """Whether the serving index holds this case."""
        return self.current is not None and self.current.index.has(network, case_id)

    def holdings(self) -> tuple[int, int]:
        """Networks and reference cases the serving index holds."""
        state = self.current
        if state is None:
            return 0, 0
        networks = state.index.networks()
        return len(networks), sum(state.index.case_count(n) for n in networks)

    def close(self) -> None:
        if self._memory_task is not None:
            self._memory_task.cancel()
        for executor in (*self.executors, *self.stagers, *self.loaders):
            executor.shutdown(wait=True)


def _reads(state: ServingState, network: str) -> bool:
    """Whether the state can embed the network's windows: always, unless its model reads
    network baselines and the network has none yet."""
    return not state.runner.metadata.network_baseline or network in state.index.baselines


def _lower_priority() -> None:
    """Runs the calling thread only on CPU time the serving threads leave (Linux: SCHED_IDLE).

    With XLA, warming a version compiles it at every batch size: seconds of CPU. At nice
    10 that takes enough of two cores to double the serving p99 during a swap
    (benchmarks/archive/2026-11-21.md); SCHED_IDLE does not. A swap under full load takes longer.
    Where SCHED_IDLE is missing, nice 10 is the fallback.
    """
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted
        log.debug("model loader cannot use SCHED_IDLE: %s", exc)
    try:
        os.setpriority(os.PRIO_PROCESS, thread, _LOADER_NICE)
    except (AttributeError, OSError) as exc:
        log.debug("model loader runs at normal priority: %s", exc)


def _groups_of_windows(
    cases: list[tuple[StoredCase, np.ndarray | None]], max_windows: int
) -> Iterator[list[tuple[StoredCase, np.ndarray]]]:
    """Consecutive groups of cases holding about max_windows windows together (a case
    with more alone)."""
    group: list[tuple[StoredCase, np.ndarray]] = []
    count = 0
    for case, windows in cases:
        assert windows is not None  # load_network returns windows where embeddings are missing
        if group and count + len(windows) > max_windows:
            yield group
            group, count = [], 0
        group.append((case, windows))
        count += len(windows)
    if group:
        yield group
