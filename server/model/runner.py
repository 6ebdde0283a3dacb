"""The model runner: one loaded encoder version on one device, traced there, called off the event loop.

The tower is rebuilt from the artifact's ``encoder.keras`` and traced on its device, so
that on a GPU Keras selects the fused cuDNN LSTM kernel. Precision (float32, or mixed
float16/bfloat16 with float32 weights) and XLA compilation are per-server settings.
Calls run on the device's own thread, and TensorFlow releases the GIL while it computes.

XLA and cuDNN exclude each other: XLA has no kernel for the fused cuDNN LSTM op. On a CPU,
where there is no cuDNN, XLA compiles each LSTM's 60 steps into one loop without
TensorFlow's per-op dispatch: for the small encoder 1.4-6 times faster at every batch size,
for the original one faster up to batch 4 and, from batch 8, as fast or up to a third
slower by machine and by whether the other cores are busy (benchmarks/archive/). So
with ``xla="auto"`` a server times both graphs at each allowed batch size during warm-up,
a lone request on its first CPU device alone and larger batches on every device at once,
as each size serves (time_graphs), and puts every device on the faster one per size;
GPUs keep cuDNN.
``xla="on"`` compiles every size (on a GPU the LSTMs are rebuilt off the cuDNN path).

Before a runner serves, each of its graphs embeds a few varied probe windows (the
artifact's own, else seeded synthetic ones), and must give finite, distinct embeddings
that agree with the tower's eager ones. Finite output on zeros proves little: on a CPU the
plain graph of a model with NaN weights gives the zero vector for every window where eager
gives NaN, and every window would match the same case at distance 0.
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faultprint.encoder.artifact import (
    PROBES_FILE,
    ArtifactError,
    ModelMetadata,
    load_tower,
    read_metadata,
    read_probes,
)
from faultprint.server.batching.assembly import aligned_zeros, is_aligned

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# auto: XLA on CPU devices, cuDNN (no XLA) on GPUs; on: XLA everywhere; off: never.
XLA_MODES = ("auto", "on", "off")
# Layers that compute in the reduced precision under a mixed policy. The scaler and the
# embedding projection stay float32: they set the distance scale the threshold is fitted on.
_MIXED_LAYER_TYPES = ("LSTM", "BatchNormalization", "Dense")
_FLOAT32_LAYER_NAMES = ("embedding",)
# Warm-up times the candidate graphs at each batch size in turn, round after round, after
# the first (traced) call: at least _MIN_TIMED_ROUNDS rounds, then more while the rounds
# so far took under _TIMING_BUDGET_S, up to _MAX_TIMED_ROUNDS; each graph's median time
# decides: on a busy machine the plain graph's best run at batch 1 can match XLA's while its
# median is 20 against 13 ms, and a best-of-two choice that kept it cost the original
# encoder 3-6 ms of p99 at C = 1 (benchmarks/archive/2026-12-06.md). A cheap size gets a
# dozen rounds for a fraction of a second; a costly one its three.
_MIN_TIMED_ROUNDS = 3
_MAX_TIMED_ROUNDS = 12
_TIMING_BUDGET_S = 0.4
# Synthetic probe windows for an artifact that carries none. Eight is one of the warmed
# batch sizes, so the XLA graph's compilation for them is one warm-up reuses.
_PROBE_COUNT = 8
_PROBE_SEED = 7
# How far a graph's embeddings of the probe windows may stray from the reference ones, as a
# share of the reference's largest value: five times or more the largest error measured on
# two CPU cores (small and original untrained encoders and the tiny trained one, on probe
# and synthetic windows): 1.3e-6 in float32, XLA or not; 3.6e-3 under mixed_float16; 4.7e-2
# under mixed_bfloat16. float32 leaves room for GPUs' TF32 matmuls and cuDNN kernels, not
# measured here. A degenerate model gives zeros or NaN for unit vectors: it strays by 1.
_TOLERANCES = {"float32": 1e-2, "mixed_float16": 2e-2, "mixed_bfloat16": 0.25}
# Embeddings of varied windows that spread less than this share of their largest value
# are one point: a healthy encoder's spread by 0.8-1.5 on the probe windows.
_MIN_SPREAD = 1e-5


@dataclass(frozen=True)
class RunnerOptions:
    """How a server runs its encoder; the same for every version it loads."""

    # float32, mixed_float16 or mixed_bfloat16 (weights stay float32 under mixed policies).
    precision: str = "float32"
    # Compile the encoder with XLA (tf.function(jit_compile=True)): auto (on CPUs, where
    # warm-up keeps the faster of the plain and the compiled graph at each batch size; GPUs
    # keep the fused cuDNN LSTM kernel, which XLA cannot compile), on, or off.
    xla: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision is {self.precision!r}; allowed: {PRECISIONS}")
        if self.xla not in XLA_MODES:
            raise ValueError(f"xla is {self.xla!r}; allowed: {XLA_MODES}")

    def compiles(self, device: str) -> bool:
        """Whether the encoder may be compiled with XLA on this device."""
        return self.xla == "on" or (self.xla == "auto" and not is_gpu(device))

    def graphs(self, device: str) -> tuple[bool, ...]:
        """The graphs a runner on this device chooses from, by whether XLA compiles them."""
        if self.xla == "on":
            return (True,)
        return (False, True) if self.compiles(device) else (False,)


def is_gpu(device: str) -> bool:
    return "GPU" in device.upper()


class ModelRunner:
    """A loaded encoder version on one device."""

    def __init__(
        self, artifact_dir: Path, device: str = "/CPU:0", options: RunnerOptions | None = None
    ) -> None:
        import tensorflow as tf

        self.options = options or RunnerOptions()
        self.metadata: ModelMetadata = read_metadata(artifact_dir)
        self.device = device
        self._tf = tf
        with tf.device(device):
            loaded = load_tower(artifact_dir, self.metadata)
            cudnn = not (self.options.compiles(device) and is_gpu(device))
            tower = rebuilt_tower(loaded, self.options.precision, cudnn=cudnn)
            self._graphs = {
                xla: encoder_function(tower, self.metadata.steps, self.metadata.features, xla)
                for xla in self.options.graphs(device)
            }
            self._validate(loaded, artifact_dir)
        self._tower = tower
        # The graph each warmed batch size runs; other sizes (reference cases embedded in
        # bulk) run the first graph, so with xla=auto an odd size never waits for an XLA
        # compilation.
        self._by_size: dict[int, Any] = {}
        self._other_sizes = next(iter(self._graphs.values()))
        # On a GPU, inputs are copied to the device on a separate thread before compute.
        self.stages_inputs = is_gpu(device)

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def compiled_sizes(self) -> tuple[int, ...]:
        """The warmed batch sizes that run the XLA-compiled graph."""
        return tuple(sorted(size for size in self._by_size if self.uses_xla(size)))

    def stage(self, batch: np.ndarray) -> Any:
        """Copies an assembled batch to the device; on a GPU this overlaps the running batch."""
        if not self.stages_inputs:
            return batch
        with self._tf.device(self.device):
            return self._tf.identity(self._tf.convert_to_tensor(batch))

    def embed(self, batch: Any) -> np.ndarray:
        """Embeddings (n, embedding_size) of windows (n, steps, features); blocking."""
        graph = self._by_size.get(len(batch), self._other_sizes)
        with self._tf.device(self.device):
            return graph(encoder_input(batch, self.device)).numpy()

    def uses_xla(self, size: int) -> bool:
        """Whether batches of this size run the XLA-compiled graph."""
        return self._by_size.get(size, self._other_sizes) is self._graphs.get(True)

    def log_warmed(self, seconds: Mapping[int, float], devices: Sequence[str]) -> None:
        sizes = ", ".join(
            f"batch {n} {t * 1000:.1f} ms{' (XLA)' * self.uses_xla(n)}" for n, t in seconds.items()
        )
        log.info("model %s warmed on %s: %s", self.version, ", ".join(devices), sizes)

    def candidates(self, only: bool | None = None) -> tuple[bool, ...]:
        """The graphs warm-up prepares and times (True: XLA): only, when it is a candidate here, else all."""
        return (only,) if only in self._graphs else tuple(self._graphs)

    def prepare(self, size: int, only: bool | None = None) -> None:
        """Traces (and compiles) each candidate graph at one batch size and checks its output.
        With only, just that graph (True: XLA), when it is a candidate here."""
        zeros = self._zeros(size)
        with self._tf.device(self.device):
            for xla in self.candidates(only):
                self._check(self._graphs[xla](encoder_input(zeros, self.device)).numpy(), size)

    def graph_call(self, size: int, xla: bool) -> Callable[[], None]:
        """One call of a prepared graph on a batch of zeros of this size, on this device, as
        warm-up times it (time_graphs); safe to make from any thread."""
        zeros = self._zeros(size)
        graph, tf, device = self._graphs[xla], self._tf, self.device

        def call() -> None:
            with tf.device(device):
                graph(encoder_input(zeros, device)).numpy()

        return call

    def _zeros(self, size: int) -> np.ndarray:
        """An aligned batch of zero windows, as warm-up feeds the graphs."""
        return aligned_zeros((size, self.metadata.steps, self.metadata.features))

    def graph_choices(self) -> dict[int, bool]:
        """Whether each warmed batch size runs the XLA-compiled graph."""
        return {size: self.uses_xla(size) for size in self._by_size}

    def same_graphs_as(self, other: ModelRunner) -> bool:
        """Whether other's graphs compute alike (the same tower shape; weights aside), so a
        graph that is the faster for one is the faster for the other."""
        a, b = self.metadata, other.metadata
        return bool(a.tower) and (a.tower, a.steps, a.features) == (b.tower, b.steps, b.features)

    def use(self, size: int, xla: bool) -> None:
        """Runs batches of this size on the XLA-compiled graph or on the plain one."""
        self._by_size[size] = self._graphs[xla]

    def _validate(self, tower: Any, artifact_dir: Path) -> None:
        """Refuses a degenerate encoder: each graph's embeddings of the probe windows must be
        finite, distinct and, within the precision's tolerance, those the exporter computed
        (the artifact's probes) or else the float32 tower's eager ones."""
        probes = read_probes(artifact_dir, self.metadata)
        if probes is not None:
            windows, reference = probes
            expected = f"the embeddings {PROBES_FILE} expects for the probe windows"
        else:
            windows = synthetic_probes(self.metadata.steps, self.metadata.features)
            reference = np.asarray(tower(windows, training=False), dtype=np.float32)
            expected = "the eager tower's embeddings of the probe windows"
        problem = degenerate(reference)
        if problem:
            raise ArtifactError(f"version {self.version} is degenerate: {expected} {problem}")
        precision = self.options.precision
        tolerance = _TOLERANCES[precision] * max(1.0, float(np.abs(reference).max()))
        for xla, graph in self._graphs.items():
            out = graph(windows).numpy()
            served = f"its {'XLA-compiled' if xla else 'plain'} graph's embeddings of the probe windows"
            problem = degenerate(out)
            if problem or out.shape != reference.shape:
                raise ArtifactError(
                    f"version {self.version} is degenerate: {served} {problem or f'have shape {out.shape}'}"
                )
            error = float(np.abs(out - reference).max())
            if not error <= tolerance:
                raise ArtifactError(
                    f"version {self.version}: {served} differ from {expected} by up to {error:.3g} "
                    f"(tolerance {tolerance:.3g} under {precision})"
                )

    def _check(self, out: np.ndarray, size: int) -> None:
        if out.shape != (size, self.metadata.embedding_size) or not np.isfinite(out).all():
            raise ArtifactError(
                f"version {self.version} produced {out.shape} (finite: {np.isfinite(out).all()}) "
                f"for a batch of {size}"
            )


def synthetic_probes(
    steps: int, features: int, count: int = _PROBE_COUNT, seed: int = _PROBE_SEED
) -> np.ndarray:
    """Varied windows for checking an encoder whose artifact carries none: each statistic of
    each window at its own level, spread over four orders of magnitude as counts are between
    quiet and busy nodes, with noise from minute to minute."""
    rng = np.random.default_rng(seed)
    levels = 10.0 ** rng.uniform(0.0, 4.0, (count, 1, features))
    return (levels * rng.lognormal(0.0, 0.5, (count, steps, features))).astype(np.float32)


def degenerate(embeddings: np.ndarray) -> str:
    """What makes embeddings (n, size) of n varied windows useless for matching, or ''."""
    bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
    if bad:
        return f"are not finite for {bad} of {len(embeddings)} windows (NaN or infinite weights?)"
    spread = float(np.ptp(embeddings, axis=0).max())
    if spread <= _MIN_SPREAD * max(1.0, float(np.abs(embeddings).max())):
        return f"are the same embedding for all {len(embeddings)} windows (spread {spread:.2g})"
    return ""


def time_graphs(
    runners: Sequence[ModelRunner], size: int, only: bool | None = None, helpers: Sequence[Executor] = ()
) -> dict[bool, float]:
    """Times the prepared candidate graphs at one batch size, in the regime that size serves
    in, round after round (median_times); returns each one's median seconds, keyed by
    whether XLA compiles it. The calling thread makes the first runner's calls; helpers,
    one thread per other runner, make theirs.

    A lone request is timed on the first device alone: under light load every batch goes to
    that device (batching.scheduler), and the lone request's latency is what light load sees.
    A batch of more than one forms only while requests arrive faster than the devices answer
    them, that is while every device computes, so it is timed with every device running the
    same graph at once. On a CPU the two regimes rank the graphs differently: alone, the plain
    graph spreads its ops onto the idle core, which a busy server does not have. Timed alone,
    servers put the original encoder on the plain graph from batch 8 or 12; timed together,
    XLA is as fast at batch 32 and 11-13 % faster from 8 to 16, and XLA at every size serves
    437 against 408 windows/s at C = 64 (benchmarks/archive/2026-12-06.md).
    """
    together = runners if size > 1 else runners[:1]
    calls = {
        xla: functools.partial(call_together, [runner.graph_call(size, xla) for runner in together], helpers)
        for xla in runners[0].candidates(only)
    }
    return median_times(calls)


def call_together(calls: Sequence[Callable[[], object]], helpers: Sequence[Executor]) -> None:
    """Makes the calls at once, the first on this thread and each other on a helper of its
    own; returns when all have returned."""
    if len(helpers) < len(calls) - 1:
        raise ValueError(f"{len(calls)} calls at once need {len(calls) - 1} helpers, got {len(helpers)}")
    pending = [helper.submit(call) for helper, call in zip(helpers, calls[1:], strict=False)]
    try:
        calls[0]()
    finally:
        for future in pending:
            future.result()


def median_times(
    calls: Mapping[bool, Callable[[], object]],
    clock: Callable[[], float] = time.perf_counter,
    min_rounds: int = _MIN_TIMED_ROUNDS,
    max_rounds: int = _MAX_TIMED_ROUNDS,
    budget_s: float = _TIMING_BUDGET_S,
) -> dict[bool, float]:
    """Each call's median time over rounds in which every call runs once, in turn: at least
    min_rounds, then more while the rounds so far took under budget_s, up to max_rounds.
    Taking turns puts whatever else the machine runs meanwhile on every candidate alike;
    the median is what a batch typically costs, where the best run flatters a graph whose
    time swings."""
    times: dict[bool, list[float]] = {key: [] for key in calls}
    started = clock()
    for rounds in range(1, max_rounds + 1):
        for key, call in calls.items():
            before = clock()
            call()
            times[key].append(clock() - before)
        if rounds >= min_rounds and clock() - started >= budget_s:
            break
    return {key: statistics.median(seconds) for key, seconds in times.items()}


def warm_alike(runners: Sequence[ModelRunner], timed: Mapping[int, Mapping[bool, float]]) -> dict[int, float]:
    """Puts every runner on the graph with the lowest time at each size (timed: time_graphs()
    per size); returns those times, the scheduler's first estimates.

    A server's devices are alike (logical CPU devices, or GPUs of one kind), so one choice
    per size serves them all. Devices that judge their own graphs while the others time
    theirs disturb each other at random: one can pick a graph twice as slow (original
    encoder, batch 1: the plain graph at 34 ms beside XLA at 17 ms; benchmarks/archive/
    2026-12-06.md). time_graphs times each candidate on every device at once, or on one alone.
    """
    seconds: dict[int, float] = {}
    for size, times in timed.items():
        xla = min(times, key=times.__getitem__)
        for runner in runners:
            runner.use(size, xla)
        seconds[size] = times[xla]
    runners[0].log_warmed(seconds, [runner.device for runner in runners])
    return seconds


def encoder_input(batch: Any, device: str) -> Any:
    """A batch as the encoder on device takes it. On a CPU, an aligned contiguous float32
    array becomes a tensor over the same memory (DLPack), so TensorFlow does not copy it: at
    batch 64 that saves 0.7-2.4 ms per call on two cores (benchmarks/archive/2026-11-22.md).
    The caller keeps the array unchanged until the call returns its output. Anything else
    (such as a read-only view of a request's bytes), and any batch for a GPU (copied to the
    device anyway), goes in as given.
    """
    if (
        is_gpu(device)
        or not isinstance(batch, np.ndarray)
        or batch.dtype != np.float32
        or not batch.flags.c_contiguous
        or not batch.flags.writeable  # DLPack cannot mark a tensor read-only
        or not is_aligned(batch)
    ):
        return batch
    import tensorflow as tf

    return tf.experimental.dlpack.from_dlpack(batch.__dlpack__())


def encoder_function(tower: Any, steps: int, features: int, xla: bool) -> Any:
    """The traced graph the server (and the benchmark's ceiling) calls: windows in, float32 embeddings out.

    Traced here, on the caller's device scope. Calling the concrete graph skips
    tf.function's per-call argument binding and cache lookup: 0.98 against 0.74 ms per
    call for the small encoder at batch 1 under XLA, a quarter of its time.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, steps, features], tf.float32)
    traced = tf.function(
        lambda x: tf.cast(tower(x, training=False), tf.float32), input_signature=[spec], jit_compile=xla
    )
    return traced.get_concrete_function()


def rebuilt_tower(tower: Any, precision: str, cudnn: bool) -> Any:
    """The same tower and weights, with its recurrent and dense layers under a mixed policy
    and, for XLA on a GPU, its LSTMs off the cuDNN path; the tower itself when neither applies."""
    import keras

    if precision == "float32" and cudnn:
        return tower
    if not cudnn:
        log.warning("XLA on a GPU: the LSTMs run without the fused cuDNN kernel, which XLA cannot compile")
    config = tower.get_config()
    for layer in config["layers"]:
        settings = layer["config"]
        mixed = layer["class_name"] in _MIXED_LAYER_TYPES and settings["name"] not in _FLOAT32_LAYER_NAMES
        if precision != "float32" and mixed:
            settings["dtype"] = precision
        if not cudnn and layer["class_name"] == "LSTM":
            settings["use_cudnn"] = False
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(tower.get_weights())
    return rebuilt
