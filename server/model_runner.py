"""The model runner: one loaded encoder version, traced on this server's device, called off the event loop.

The tower is rebuilt from the artifact's ``encoder.keras`` and traced here, so that on
a GPU Keras selects the fused cuDNN LSTM kernel. Calls run on the runner's executor
(one thread per device), and TensorFlow releases the GIL while it computes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from encoder.artifact import KERAS_FILE, ArtifactError, ModelMetadata, read_metadata

log = logging.getLogger(__name__)


class ModelRunner:
    """A loaded, warmed encoder version."""

    def __init__(self, artifact_dir: Path, device: str | None = None) -> None:
        import keras
        import tensorflow as tf

        import encoder.scaler  # noqa: F401  (registers FeatureScaler for deserialisation)

        self.metadata: ModelMetadata = read_metadata(artifact_dir)
        self.device = device
        try:
            tower = keras.saving.load_model(Path(artifact_dir) / KERAS_FILE, compile=False)
        except Exception as exc:
            raise ArtifactError(f"cannot load encoder of version {self.metadata.version}: {exc}") from exc
        expected = (None, self.metadata.steps, self.metadata.features)
        if tuple(tower.input_shape) != expected or tower.output_shape[-1] != self.metadata.embedding_size:
            raise ArtifactError(
                f"encoder input {tower.input_shape} / output {tower.output_shape} disagree with "
                f"metadata input {expected} / embedding size {self.metadata.embedding_size}"
            )
        self._tower = tower
        spec = tf.TensorSpec([None, self.metadata.steps, self.metadata.features], tf.float32)
        self._embed = tf.function(lambda x: tower(x, training=False), input_signature=[spec])
        self._tf = tf

    @property
    def version(self) -> str:
        return self.metadata.version

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (n, embedding_size) of windows (n, steps, features); blocking."""
        if self.device:
            with self._tf.device(self.device):
                return self._embed(batch).numpy()
        return self._embed(batch).numpy()

    def warm(self, batch_sizes: Iterable[int]) -> None:
        """Runs every batch size once, so no request pays for tracing or allocation."""
        for size in batch_sizes:
            zeros = np.zeros((size, self.metadata.steps, self.metadata.features), np.float32)
            out = self.embed(zeros)
            if out.shape != (size, self.metadata.embedding_size) or not np.isfinite(out).all():
                raise ArtifactError(
                    f"version {self.version} produced {out.shape} (finite: {np.isfinite(out).all()}) "
                    f"for a batch of {size}"
                )
        log.info("model %s warmed for batch sizes %s", self.version, list(batch_sizes))
