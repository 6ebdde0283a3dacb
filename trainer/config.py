"""Training configuration: model sizes, data, optimisation and seeds, loaded from JSON or a preset."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from faultprint.encoder.tower import TowerConfig
from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS
from faultprint.traffic.simulator import CONDITIONS, CORE_CONDITIONS, PROFILES


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a training run depends on; recorded in the published model's metadata."""

    # Sizes of the encoder.
    tower: TowerConfig = field(default_factory=TowerConfig)
    # Simulated network profiles to train on (when random_networks is 0).
    networks: tuple[str, ...] = ("metro-eu", "rural-eu")
    # Random network profiles to simulate and train on instead (traffic/simulator.py
    # random_profile), each read relative to its own first-day baseline; 0: the named networks.
    random_networks: int = 0
    # Of the random networks, those held out of training: early stopping, the distance
    # threshold and the validation figures come from networks the model never trained on.
    validation_networks: int = 8
    # Nodes and days simulated per random network, and its mean faults per node and day.
    nodes_per_network: int = 4
    days_per_network: int = 2
    faults_per_day: float = 7.0
    # Conditions (normal and faults) to train on.
    conditions: tuple[str, ...] = CONDITIONS
    # Simulated training windows per condition and network.
    windows_per_condition: int = 120
    # Training windows ending this many minutes or more into a fault that began inside them
    # take its label (traffic/windowing.py min_onset_minutes), so the model names a fault a
    # node streams from its first minutes; 0: a fault must cover 20 minutes of a window.
    onset_minutes: int = 0
    # Share of windows held out for validation and for fitting the distance threshold.
    validation_fraction: float = 0.2
    # Most passes over the training windows.
    epochs: int = 8
    # Stop after this many epochs without a lower validation loss (the best epoch's weights are
    # kept, unless weights are averaged).
    early_stopping_patience: int = 3
    # Average the weights of every epoch from this one (1-based) to the last; 0: keep the best
    # epoch's instead.
    average_from_epoch: int = 0
    # Windows per batch; triplets are mined inside each batch.
    batch_size: int = 32
    # Windows of each condition in a batch (batch_size / windows_per_class conditions per batch).
    windows_per_class: int = 4
    # Windows drawn per epoch, as a multiple of the number of training windows.
    epoch_size_factor: int = 4
    # Batches per epoch instead, when positive (for large simulated sets).
    batches_per_epoch: int = 0
    # Augmentation: share of statistics zeroed per training window (a vendor that fills a
    # column differently, a family the probe lost), and the range of a random gain on the
    # whole window (fault intensity); (1, 1) leaves windows alone.
    statistic_dropout: float = 0.0
    gain_range: tuple[float, float] = (1.0, 1.0)
    learning_rate: float = 1e-3
    # Triplet-loss margin on squared distances (0.2 in the original design).
    margin: float = 0.2
    # Quantile of same-condition distances that becomes the unknown threshold.
    threshold_quantile: float = 0.995
    # Seed for simulation, sampling and weights.
    seed: int = 7

    def __post_init__(self) -> None:
        unknown = [n for n in self.networks if n not in PROFILES]
        if unknown:
            raise ValueError(f"unknown networks {unknown}; known: {sorted(PROFILES)}")
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad:
            raise ValueError(f"unknown conditions {bad}; known: {list(CONDITIONS)}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if min(self.epochs, self.batch_size, self.windows_per_condition, self.epoch_size_factor,
               self.early_stopping_patience) < 1:  # fmt: skip
            raise ValueError(
                "epochs, batch_size, windows_per_condition, epoch_size_factor and early_stopping_patience "
                "must be positive"
            )
        if self.random_networks and not 0 < self.validation_networks < self.random_networks:
            raise ValueError("validation_networks must be positive and fewer than random_networks")
        if self.random_networks and self.days_per_network < 2:
            raise ValueError("days_per_network must be at least 2: the first day is each network's baseline")
        if self.onset_minutes < 0:
            raise ValueError(f"onset_minutes must be 0 or positive, got {self.onset_minutes}")
        if not 0 <= self.statistic_dropout < 1 or not 0 < self.gain_range[0] <= self.gain_range[1]:
            raise ValueError(f"statistic_dropout must be in [0, 1) and gain_range ascending and positive, "
                             f"got {self.statistic_dropout}, {self.gain_range}")  # fmt: skip
        if not 2 <= self.windows_per_class <= self.batch_size // 2:
            raise ValueError(
                "windows_per_class must be at least 2 and leave room for two conditions per batch"
            )

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["tower"] = self.tower.to_dict()
        raw["networks"] = list(self.networks)
        raw["conditions"] = list(self.conditions)
        raw["gain_range"] = list(self.gain_range)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingConfig:
        fields = dict(raw)
        if "tower" in fields:
            fields["tower"] = TowerConfig.from_dict(fields["tower"])
        for key in ("networks", "conditions", "gain_range"):
            if key in fields:
                fields[key] = tuple(fields[key])
        return cls(**fields)

    @classmethod
    def load(cls, path_or_preset: str) -> TrainingConfig:
        """A preset name (see PRESETS) or the path of a JSON file of fields."""
        if path_or_preset in PRESETS:
            return PRESETS[path_or_preset]
        return cls.from_dict(json.loads(Path(path_or_preset).read_text()))


def _tower(lstm: int, dense: int, embedding: int, summary: int = 0, newest: int = 0) -> TowerConfig:
    return TowerConfig(WINDOW_STEPS, NUM_FEATURES, (lstm, lstm), dense, embedding, summary_units=summary,
                       summary_newest_minutes=newest, network_baseline=summary > 0)  # fmt: skip


PRESETS: dict[str, TrainingConfig] = {
    # Seconds on 2 CPU cores: for tests.
    "tiny": TrainingConfig(
        tower=_tower(16, 32, 8),
        conditions=CORE_CONDITIONS,
        windows_per_condition=40,
        epochs=4,
        epoch_size_factor=4,
    ),
    # A couple of minutes on 2 CPU cores: for the demo.
    "small": TrainingConfig(tower=_tower(64, 64, 10), windows_per_condition=80, epochs=6),
    # For networks never seen: 100 random networks read relative to their own baselines, an
    # LSTM and a summary branch (which also reads the newest 5 minutes), windows labelled from a
    # fault's third minute, weights averaged over epochs 3-8; about 3 minutes on 2 CPU cores.
    "transfer": TrainingConfig(
        tower=_tower(64, 128, 32, summary=256, newest=5),
        random_networks=100,
        onset_minutes=3,
        validation_networks=8,
        epochs=8,
        early_stopping_patience=8,
        average_from_epoch=3,
        batches_per_epoch=400,
        statistic_dropout=0.15,
        gain_range=(0.5, 1.5),
    ),
    # The original design's sizes (2 x LSTM-512, about 3.7 M parameters).
    "original": TrainingConfig(tower=_tower(512, 512, 10), windows_per_condition=200, epochs=10),
}


def with_overrides(config: TrainingConfig, **overrides: Any) -> TrainingConfig:
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
