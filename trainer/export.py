"""Turns a training result into a versioned model artifact."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from faultprint.encoder.artifact import ModelMetadata, write_artifact
from faultprint.encoder.tower import TowerConfig, build_tower
from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.catalogue import FEATURE_NAMES
from faultprint.traffic.simulator import CONDITIONS, PROFILES, simulate_windows
from faultprint.trainer.config import TrainingConfig
from faultprint.trainer.training import TrainingResult

# Probe windows an artifact carries, one per condition: few enough that a server checks
# every graph on them in one call (server/model/runner.py), and a warmed batch size.
PROBE_WINDOWS = 8


def new_version() -> str:
    """A sortable, unique version name: UTC time plus a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def probe_windows(steps: int, features: int, seed: int, network_baseline: bool = False) -> np.ndarray | None:
    """Varied windows for the artifact's probes: one simulated window of each of the first
    PROBE_WINDOWS conditions (normalised by their own baseline for a tower that reads network
    baselines); None when the simulator has fewer statistics than the model reads."""
    windows, _ = simulate_windows(PROFILES["metro-eu"], CONDITIONS[:PROBE_WINDOWS], 1, seed, steps)
    if windows.shape[-1] < features:
        return None
    windows = windows[..., :features]
    return NetworkBaseline.fit(windows).normalise(windows) if network_baseline else windows


def export(
    result: TrainingResult,
    config: TrainingConfig,
    out_root: Path,
    parent_version: str | None = None,
    evaluation: dict[str, Any] | None = None,
    version: str | None = None,
    transfer: dict[str, Any] | None = None,
) -> Path:
    """Writes out_root/<version>/ and returns it; evaluation is an EvaluationReport.to_dict(),
    transfer the transfer protocol's reports (trainer/protocol.py reports_to_dict)."""
    version = version or new_version()
    metadata = ModelMetadata(
        version=version,
        steps=config.tower.steps,
        features=config.tower.features,
        embedding_size=config.tower.embedding_size,
        distance_threshold=result.distance_threshold,
        feature_names=FEATURE_NAMES,
        tower=config.tower.to_dict(),
        training={
            "config": config.to_dict(),
            "history": result.history,
            "validation_one_shot_accuracy": result.validation_one_shot_accuracy,
            "evaluation": evaluation,
            "transfer": transfer,
        },
        parent_version=parent_version,
        created_unix_s=time.time(),
    )
    probes = probe_windows(
        config.tower.steps, config.tower.features, config.seed, config.tower.network_baseline
    )
    return write_artifact(result.tower, metadata, Path(out_root) / version, probes)


def export_untrained(
    tower_config: TowerConfig,
    out_root: Path,
    seed: int,
    distance_threshold: float = 1.0,
    version: str | None = None,
) -> Path:
    """An untrained encoder whose scaler is fitted on simulated traffic, written as an artifact.

    For load tests and serving tests: the cost of a forward pass depends on the sizes,
    not on the weights. Feature names are placeholders when the width is not the
    simulator's.
    """
    import keras

    keras.utils.set_random_seed(seed)
    tower = build_tower(tower_config)
    windows, _ = simulate_windows(PROFILES["metro-eu"], CONDITIONS, 4, seed)
    windows = windows[..., : tower_config.features]
    if tower_config.network_baseline:
        windows = NetworkBaseline.fit(windows).normalise(windows)
    tower.get_layer("feature_scaler").fit(windows)
    names = FEATURE_NAMES if tower_config.features == len(FEATURE_NAMES) else None
    metadata = ModelMetadata(
        version=version or f"untrained-{new_version()}",
        steps=tower_config.steps,
        features=tower_config.features,
        embedding_size=tower_config.embedding_size,
        distance_threshold=distance_threshold,
        feature_names=names or tuple(f"f{i}" for i in range(tower_config.features)),
        tower=tower_config.to_dict(),
        created_unix_s=time.time(),
    )
    probes = probe_windows(tower_config.steps, tower_config.features, seed, tower_config.network_baseline)
    return write_artifact(tower, metadata, Path(out_root) / metadata.version, probes)
