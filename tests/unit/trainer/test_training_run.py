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


def test_validation_holds_out_whole_networks_when_the_networks_are_known() -> None:
    from faultprint.trainer.training import validation_split

    config = replace(PRESETS["tiny"], validation_networks=2)
    networks = np.repeat(np.array(["a", "b", "c", "d", "e"]), 10)
    labels = np.tile(np.array(["normal", "x"]), 25)
    val, tr = validation_split(config, labels, networks, np.random.default_rng(1))
    assert len(set(networks[val])) == 2 and not set(networks[val]) & set(networks[tr])
    assert len(val) + len(tr) == 50
    # One network: whole networks cannot be held out, so a share of the windows is.
    val, tr = validation_split(config, labels, np.full(50, "a"), np.random.default_rng(1))
    assert len(val) == 10 and not set(val) & set(tr)


def test_augmentation_drops_statistics_and_scales_windows_in_training_batches_only() -> None:
    from faultprint.trainer.training import batch_dataset

    config = replace(PRESETS["tiny"], statistic_dropout=0.5, gain_range=(2.0, 3.0))
    windows = np.ones((8, 6, 40), np.float32)
    labels = np.array(["a", "b"] * 4)
    batches = np.arange(8).reshape(2, 4)
    plain = next(iter(batch_dataset(windows, labels, batches)))[0].numpy()
    assert (plain == 1).all()
    augmented = next(iter(batch_dataset(windows, labels, batches, augment=config)))[0].numpy()
    dropped = (augmented == 0).all(axis=1)  # a statistic is dropped for the whole window
    assert 0.2 < dropped.mean() < 0.8
    kept = augmented[augmented != 0]
    assert ((kept >= 2) & (kept <= 3)).all()


def test_averaging_leaves_the_mean_of_the_epochs_weights_and_keeps_training_to_the_end() -> None:
    from faultprint.trainer.training import WeightAverage

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    average = WeightAverage(first_epoch=2)
    average.set_model(model)
    for epoch, value in enumerate((1.0, 3.0, 5.0)):
        model.set_weights([np.full((2, 1), value, np.float32), np.full((1,), value, np.float32)])
        average.on_epoch_end(epoch)
    average.on_train_end()
    assert np.allclose(model.get_weights()[0], 4.0), "epochs 2 and 3 (1-based) averaged"
    config = replace(PRESETS["transfer"])
    stopper, averaging = _callbacks(config, TrainingRun())
    assert isinstance(averaging, WeightAverage) and averaging.first_epoch == 3
    assert not stopper.restore_best_weights
