"""The model runner: one loaded encoder version on one device, traced there, called off the event loop.

The tower is rebuilt from the artifact's ``encoder.keras`` and traced on its device, so
that on a GPU Keras selects the fused cuDNN LSTM kernel. Precision (float32, or mixed
float16/bfloat16 with float32 weights) and XLA compilation are per-server settings.
Calls run on the device's own thread, and TensorFlow releases the GIL while it computes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoder.artifact import ArtifactError, ModelMetadata, load_tower, read_metadata

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Layers that compute in the reduced precision under a mixed policy. The scaler and the
# embedding projection stay float32: they set the distance scale the threshold is fitted on.
_MIXED_LAYER_TYPES = ("LSTM", "BatchNormalization", "Dense")
_FLOAT32_LAYER_NAMES = ("embedding",)


@dataclass(frozen=True)
class RunnerOptions:
    """How a server runs its encoder; the same for every version it loads."""

    # float32, mixed_float16 or mixed_bfloat16 (weights stay float32 under mixed policies).
    precision: str = "float32"
    # Compile the encoder with XLA (tf.function(jit_compile=True)).
    xla: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision is {self.precision!r}; allowed: {PRECISIONS}")


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
            tower = load_tower(artifact_dir, self.metadata)
            if self.options.precision != "float32":
                tower = _with_precision(tower, self.options.precision)
        self._tower = tower
        spec = tf.TensorSpec([None, self.metadata.steps, self.metadata.features], tf.float32)
        self._embed = tf.function(
            lambda x: tf.cast(tower(x, training=False), tf.float32),
            input_signature=[spec],
            jit_compile=self.options.xla,
        )
        # On a GPU, inputs are copied to the device on a separate thread before compute.
        self.stages_inputs = "GPU" in device.upper()

    @property
    def version(self) -> str:
        return self.metadata.version

    def stage(self, batch: np.ndarray) -> Any:
        """Copies an assembled batch to the device; on a GPU this overlaps the running batch."""
        if not self.stages_inputs:
            return batch
        with self._tf.device(self.device):
            return self._tf.identity(self._tf.convert_to_tensor(batch))

    def embed(self, batch: Any) -> np.ndarray:
        """Embeddings (n, embedding_size) of windows (n, steps, features); blocking."""
        with self._tf.device(self.device):
            return self._embed(batch).numpy()

    def warm(self, batch_sizes: Iterable[int]) -> dict[int, float]:
        """Traces and runs every batch size, so no request pays for it; returns seconds per size.

        Each size runs twice; the second, traced run is the timing that seeds the
        scheduler's estimate of batch time.
        """
        timings = {}
        for size in batch_sizes:
            zeros = np.zeros((size, self.metadata.steps, self.metadata.features), np.float32)
            out = self.embed(zeros)
            if out.shape != (size, self.metadata.embedding_size) or not np.isfinite(out).all():
                raise ArtifactError(
                    f"version {self.version} produced {out.shape} (finite: {np.isfinite(out).all()}) "
                    f"for a batch of {size}"
                )
            started = time.perf_counter()
            self.embed(zeros)
            timings[size] = time.perf_counter() - started
        log.info(
            "model %s warmed on %s: %s",
            self.version,
            self.device,
            ", ".join(f"batch {s} {t * 1000:.1f} ms" for s, t in timings.items()),
        )
        return timings


def _with_precision(tower: Any, precision: str) -> Any:
    """The same tower and weights with its recurrent and dense layers under a mixed policy."""
    import keras

    config = tower.get_config()
    for layer in config["layers"]:
        if layer["class_name"] in _MIXED_LAYER_TYPES and layer["config"]["name"] not in _FLOAT32_LAYER_NAMES:
            layer["config"]["dtype"] = precision
    mixed = keras.Model.from_config(config)
    mixed.set_weights(tower.get_weights())
    return mixed
