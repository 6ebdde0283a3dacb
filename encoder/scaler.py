"""Fitted feature normalisation that travels inside the model, replacing the input BatchNorm.

The original design put a BatchNorm on the input and saw good training loss with poor
validation loss; a normalisation fitted once on training statistics does not drift.
Counts span orders of magnitude between small and large networks, so each value is
first compressed with a signed log1p and then standardised per statistic.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from faultprint.traffic.baseline import signed_log1p

# A statistic that never moves in the training data must not blow up at serving time.
_MIN_STD = 1e-3


@keras.saving.register_keras_serializable(package="faultprint")
class FeatureScaler(keras.layers.Layer):
    """y = (sign(x) * log1p(|x|) - mean) / std, with mean and std fitted per statistic."""

    def __init__(self, features: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.features = features
        self.mean = self.add_weight(name="mean", shape=(features,), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(features,), initializer="ones", trainable=False)

    def fit(self, windows: np.ndarray) -> None:
        """Fits mean and std on training windows shaped (n, steps, features)."""
        flat = signed_log1p(windows.reshape(-1, self.features).astype(np.float64))
        self.mean.assign(flat.mean(axis=0).astype(np.float32))
        self.std.assign(np.maximum(flat.std(axis=0), _MIN_STD).astype(np.float32))

    def call(self, inputs):
        compressed = ops.sign(inputs) * ops.log1p(ops.abs(inputs))
        return (compressed - self.mean) / self.std

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "features": self.features}
