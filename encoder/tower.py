"""The embedding tower: the only network the server loads (training wrappers live in trainer/).

The default sizes are the original design's: LSTM(512, sequences), LSTM(512), BN,
Dense(512), BN, Dense(10). The LSTM layers keep Keras's cuDNN-eligible settings
(tanh, sigmoid, no recurrent dropout, not unrolled, with bias), so that a server
tracing the tower on a GPU gets the fused cuDNN kernel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras

from faultprint.encoder.scaler import FeatureScaler
from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS

# The LSTM arguments that keep Keras on its cuDNN path; checked by a unit test.
CUDNN_LSTM_SETTINGS: dict[str, object] = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "recurrent_dropout": 0.0,
    "unroll": False,
    "use_bias": True,
}


@dataclass(frozen=True)
class TowerConfig:
    """Sizes of the embedding tower."""

    # Minutes per window.
    steps: int = WINDOW_STEPS
    # Statistics per minute: the catalogue's columns.
    features: int = NUM_FEATURES
    # Units of the first (sequence-returning) and second LSTM layers.
    lstm_units: tuple[int, int] = (512, 512)
    # Units of the dense layer between the LSTMs and the embedding.
    dense_units: int = 512
    # Length of the embedding.
    embedding_size: int = 10
    # Project embeddings onto the unit sphere, so the triplet margin and the
    # distance threshold have a fixed scale (distances lie in [0, 2]).
    l2_normalize: bool = True

    def __post_init__(self) -> None:
        sizes = {
            "steps": self.steps,
            "features": self.features,
            "dense_units": self.dense_units,
            "embedding_size": self.embedding_size,
        }
        for name, value in {**sizes, "lstm_units": min(self.lstm_units)}.items():
            if value < 1:
                raise ValueError(f"TowerConfig.{name} must be at least 1, got {value}")
        if len(self.lstm_units) != 2:
            raise ValueError(f"TowerConfig.lstm_units needs two sizes, got {self.lstm_units}")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "lstm_units": list(self.lstm_units)}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> TowerConfig:
        fields = dict(raw)
        fields["lstm_units"] = tuple(fields["lstm_units"])  # type: ignore[arg-type]
        return cls(**fields)  # type: ignore[arg-type]


def build_tower(config: TowerConfig) -> keras.Model:
    """Builds the tower: windows (batch, steps, features) -> embeddings (batch, size)."""
    windows = keras.Input(shape=(config.steps, config.features), name="windows")
    x = FeatureScaler(config.features, name="feature_scaler")(windows)
    x = keras.layers.LSTM(config.lstm_units[0], return_sequences=True, name="lstm_1", **CUDNN_LSTM_SETTINGS)(
        x
    )
    x = keras.layers.LSTM(config.lstm_units[1], name="lstm_2", **CUDNN_LSTM_SETTINGS)(x)
    x = keras.layers.BatchNormalization(name="bn_1")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn_2")(x)
    x = keras.layers.Dense(config.embedding_size, name="embedding")(x)
    if config.l2_normalize:
        x = keras.layers.UnitNormalization(name="unit_norm")(x)
    else:
        x = keras.layers.BatchNormalization(name="bn_3")(x)
    return keras.Model(windows, x, name="faultprint_tower")
