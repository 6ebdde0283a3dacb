"""The embedding tower: the only network the server loads (training wrappers live in trainer/).

The default sizes are the original design's: LSTM(512, sequences), LSTM(512), BN,
Dense(512), BN, Dense(10). The LSTM layers keep Keras's cuDNN-eligible settings
(tanh, sigmoid, no recurrent dropout, not unrolled, with bias), so that a server
tracing the tower on a GPU gets the fused cuDNN kernel.

A tower for networks it has never seen reads windows already normalised by their
network's baseline (traffic/baseline.py: ``network_baseline``) and adds a summary
branch beside the LSTMs: per statistic, the mean of the newest minutes
(``summary_newest_minutes``, if set) and of the last 20, and the mean, maximum, minimum and
spread of the window (``summary_units``). Faults are departures
from a network's own normal; the summaries carry their size and the LSTMs their shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

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
    # Units of the dense layer over per-statistic window summaries beside the LSTMs (0: none).
    summary_units: int = 0
    # The summaries also hold each statistic's mean over the window's newest this many minutes
    # (0: not): what a fault's first minutes move, before the last 20 minutes' mean shows it.
    summary_newest_minutes: int = 0
    # The tower reads windows normalised by their network's baseline (traffic/baseline.py);
    # the server and the evaluation normalise each window with its network's baseline first.
    network_baseline: bool = False

    def __post_init__(self) -> None:
        sizes = {
            "steps": self.steps,
            "features": self.features,
            "dense_units": self.dense_units,
            "embedding_size": self.embedding_size,
        }
        if self.summary_units < 0:
            raise ValueError(f"TowerConfig.summary_units must not be negative, got {self.summary_units}")
        if not 0 <= self.summary_newest_minutes <= self.steps or (
            self.summary_newest_minutes and not self.summary_units
        ):
            raise ValueError(
                f"TowerConfig.summary_newest_minutes must be in [0, steps] and needs summary_units, got "
                f"{self.summary_newest_minutes} with summary_units {self.summary_units}"
            )
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


# Minutes at the end of a window whose mean the summary branch reads (a fault's latest state).
SUMMARY_RECENT_MINUTES = 20


@keras.saving.register_keras_serializable(package="faultprint")
class WindowSummary(keras.layers.Layer):
    """(batch, steps, features) -> (batch, 5 or 6 x features): per statistic the mean of the last
    recent_minutes, and the window's mean, maximum, minimum and standard deviation; with
    newest_minutes, first the mean of the last newest_minutes."""

    def __init__(
        self, recent_minutes: int = SUMMARY_RECENT_MINUTES, newest_minutes: int = 0, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.recent_minutes = recent_minutes
        self.newest_minutes = newest_minutes

    def call(self, inputs):
        newest = [ops.mean(inputs[:, -self.newest_minutes :], axis=1)] if self.newest_minutes else []
        recent = ops.mean(inputs[:, -self.recent_minutes :], axis=1)
        return ops.concatenate(
            [*newest, recent, ops.mean(inputs, axis=1), ops.max(inputs, axis=1), ops.min(inputs, axis=1),
             ops.std(inputs, axis=1)], axis=-1,
        )  # fmt: skip

    def compute_output_shape(self, input_shape):
        return (input_shape[0], (6 if self.newest_minutes else 5) * input_shape[-1])

    def get_config(self) -> dict[str, object]:
        config = super().get_config()
        return {**config, "recent_minutes": self.recent_minutes, "newest_minutes": self.newest_minutes}


def build_tower(config: TowerConfig) -> keras.Model:
    """Builds the tower: windows (batch, steps, features) -> embeddings (batch, size)."""
    windows = keras.Input(shape=(config.steps, config.features), name="windows")
    scaled = FeatureScaler(config.features, name="feature_scaler")(windows)
    x = keras.layers.LSTM(config.lstm_units[0], return_sequences=True, name="lstm_1", **CUDNN_LSTM_SETTINGS)(
        scaled
    )
    x = keras.layers.LSTM(config.lstm_units[1], name="lstm_2", **CUDNN_LSTM_SETTINGS)(x)
    if config.summary_units:
        summary = WindowSummary(
            min(SUMMARY_RECENT_MINUTES, config.steps), config.summary_newest_minutes, name="window_summary"
        )(windows)
        summary = keras.layers.Dense(config.summary_units, activation="relu", name="summary_dense")(summary)
        x = keras.layers.Concatenate(name="lstm_and_summary")([x, summary])
    x = keras.layers.BatchNormalization(name="bn_1")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.BatchNormalization(name="bn_2")(x)
    x = keras.layers.Dense(config.embedding_size, name="embedding")(x)
    if config.l2_normalize:
        x = keras.layers.UnitNormalization(name="unit_norm")(x)
    else:
        x = keras.layers.BatchNormalization(name="bn_3")(x)
    return keras.Model(windows, x, name="faultprint_tower")
