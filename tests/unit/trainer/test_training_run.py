"""Training's reporting and devices: TensorBoard logs, early stopping, and MirroredStrategy on two devices."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from faultprint.traffic.simulator import PROFILES, simulate_windows
from faultprint.trainer.config import PRESETS
from faultprint.trainer.training import TrainingRun, _callbacks, distribution_strategy, train


def test_early_stopping_watches_the_validation_loss_and_keeps_the_best_epoch() -> None:
    config = replace(PRESETS["tiny"], early_stopping_patience=2)
    (stopper,) = _callbacks(config, TrainingRun())
    assert isinstance(stopper, keras.callbacks.EarlyStopping)
    assert (stopper.monitor, stopper.patience, stopper.restore_best_weights) == ("val_loss", 2, True)


def test_one_device_trains_without_mirroring() -> None:
    assert distribution_strategy([]).num_replicas_in_sync == 1


def test_training_mirrors_over_two_devices_and_writes_tensorboard_logs(tmp_path: Path) -> None:
    """The CPU is split into two logical devices for the tests (tests/conftest.py)."""
    config = replace(PRESETS["tiny"], epochs=2, windows_per_condition=12)
    windows, labels = simulate_windows(PROFILES["metro-eu"], config.conditions, 12, seed=4)
    run = TrainingRun(log_dir=tmp_path / "tb", devices=["/cpu:0", "/cpu:1"])
    assert distribution_strategy(run.devices).num_replicas_in_sync == 2
    result = train(config, windows, labels, run)
    assert set(result.history) == {"loss", "val_loss"}
    assert all(np.isfinite(v).all() for v in result.history.values())
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    embeddings = result.tower.predict(windows[:4], verbose=0)
    assert embeddings.shape == (4, config.tower.embedding_size) and np.isfinite(embeddings).all()
