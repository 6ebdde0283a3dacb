"""Triplet training of the embedding tower, and the fitting of its distance threshold.

Batches are class-balanced (several windows of several conditions), one shared
tower embeds them, and the triplet loss is taken over every anchor-positive pair
with a semi-hard negative mined inside the batch (the original design used fixed
random triplets, most of which soon carry no loss). Only the tower is exported.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from faultprint.encoder.tower import build_tower
from faultprint.trainer.config import TrainingConfig

log = logging.getLogger(__name__)


def pairwise_squared_distances(embeddings: tf.Tensor) -> tf.Tensor:
    squares = tf.reduce_sum(tf.square(embeddings), axis=-1)
    dot = tf.matmul(embeddings, embeddings, transpose_b=True)
    return tf.maximum(squares[:, None] - 2.0 * dot + squares[None, :], 0.0)


def semi_hard_triplet_loss(labels: tf.Tensor, embeddings: tf.Tensor, margin: float) -> tf.Tensor:
    """Triplet loss over every anchor-positive pair of a batch, each with its semi-hard negative.

    For a pair (a, p) the negative is the nearest one still farther from a than p
    (semi-hard: it yields a loss under the margin without being the hardest, which
    collapses training); where none is farther, the farthest negative. Distances are
    squared, as in the original design's margin of 0.2.
    """
    d = pairwise_squared_distances(embeddings)
    same = tf.equal(labels[:, None], labels[None, :])
    positive_pairs = tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))
    d_ap = d[:, :, None]  # (anchor, positive, 1)
    d_an = d[:, None, :]  # (anchor, 1, negative)
    negative = tf.logical_not(same)[:, None, :]
    farther = tf.logical_and(negative, d_an > d_ap)
    ceiling = tf.reduce_max(d) + 1.0
    nearest_farther = tf.reduce_min(tf.where(farther, d_an, ceiling), axis=2)
    farthest = tf.reduce_max(tf.where(negative, d_an, 0.0), axis=2)
    chosen = tf.where(tf.reduce_any(farther, axis=2), nearest_farther, farthest)
    losses = tf.maximum(d - chosen + margin, 0.0)
    mask = tf.cast(positive_pairs, losses.dtype)
    return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


class SiameseModel(keras.Model):
    """Training wrapper: one shared tower embeds a batch; its triplets are mined online."""

    def __init__(self, tower: keras.Model, margin: float) -> None:
        super().__init__()
        self.tower = tower
        self.margin = margin
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=False):
        return self.tower(inputs, training=training)

    def train_step(self, data):
        windows, labels = data
        with tf.GradientTape() as tape:
            loss = semi_hard_triplet_loss(labels, self(windows, training=True), self.margin)
        variables = self.tower.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        windows, labels = data
        self.loss_tracker.update_state(semi_hard_triplet_loss(labels, self(windows), self.margin))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def class_balanced_batches(labels: np.ndarray, batches: int, batch_size: int, per_class: int,
                           rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(batches, batch_size) window indices: per_class windows of each of batch_size/per_class classes.

    Every batch holds several windows of several conditions, so each window has
    positives and negatives to mine in its own batch.
    """
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    n_classes = min(len(classes), max(batch_size // per_class, 2))
    out = np.empty((batches, n_classes * per_class), dtype=np.int64)
    for b in range(batches):
        chosen = rng.choice(len(classes), size=n_classes, replace=False)
        out[b] = np.concatenate([rng.choice(members[c], size=per_class) for c in chosen])
    return out


def batch_dataset(windows: np.ndarray, labels: np.ndarray, batches: np.ndarray,
                  augment: TrainingConfig | None = None) -> tf.data.Dataset:  # fmt: skip
    """(windows, label ids) batches gathered from rows of window indices, augmented as the
    config says when one is given."""
    table = tf.constant(windows)
    ids = tf.constant(np.unique(labels, return_inverse=True)[1].astype(np.int32))
    dropout = augment.statistic_dropout if augment else 0.0
    low, high = augment.gain_range if augment else (1.0, 1.0)

    def gather(rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.gather(table, rows)
        shape = tf.shape(batch)
        if dropout:
            batch = batch * tf.cast(tf.random.uniform((shape[0], 1, shape[2])) >= dropout, batch.dtype)
        if (low, high) != (1.0, 1.0):
            batch = batch * tf.random.uniform((shape[0], 1, 1), low, high)
        return batch, tf.gather(ids, rows)

    return (
        tf.data.Dataset.from_tensor_slices(batches)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def embed(tower: keras.Model, windows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(tower.predict(windows, batch_size=batch_size, verbose=0))


def fit_distance_threshold(embeddings: np.ndarray, labels: np.ndarray, quantile: float) -> float:
    """The quantile of distances between windows of the same condition.

    A one-shot reference is just another window of its condition, so this is the
    distance within which a window of a known condition lies from its reference.
    """
    distances = []
    for c in np.unique(labels):
        group = embeddings[labels == c]
        diff = group[:, None, :] - group[None, :, :]
        d = np.sqrt((diff**2).sum(-1))
        distances.append(d[np.triu_indices(len(group), k=1)])
    return float(np.quantile(np.concatenate(distances), quantile))


@dataclass
class TrainingResult:
    tower: keras.Model
    distance_threshold: float
    history: dict[str, list[float]]
    validation_one_shot_accuracy: float


def one_shot_accuracy(embeddings: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> float:
    """Enrols one random window per condition and labels the rest by the nearest one."""
    classes = np.unique(labels)
    refs = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])
    rest = np.setdiff1d(np.arange(len(labels)), refs)
    d = np.linalg.norm(embeddings[rest, None, :] - embeddings[None, refs, :], axis=-1)
    return float((classes[d.argmin(axis=1)] == labels[rest]).mean())


def distribution_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over the given devices, or over every GPU when more than one is visible.

    Otherwise the default strategy (one device). Each replica mines its triplets in its
    share of a batch; batches are groups of windows_per_class, so a share keeps whole groups.
    """
    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] if len(gpus) > 1 else []
    if len(devices) > 1:
        log.info("training on %d devices with MirroredStrategy: %s", len(devices), ", ".join(devices))
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


@dataclass(frozen=True)
class TrainingRun:
    """How a training run reports, apart from what it learns (that is the config)."""

    # TensorBoard event files go here; None writes none.
    log_dir: Path | None = None
    # A Keras progress bar per epoch; otherwise one line per epoch (for logs and CI).
    progress_bar: bool = False
    # Devices to mirror training over; None picks every GPU when there are several.
    devices: list[str] | None = None


class WeightAverage(keras.callbacks.Callback):
    """Averages the model's weights over the epochs from first_epoch (1-based) on, and leaves the
    average in the model when training ends: one epoch's weights sway with its last batches,
    their average does not."""

    def __init__(self, first_epoch: int) -> None:
        super().__init__()
        self.first_epoch = first_epoch
        self.sum: list[np.ndarray] | None = None
        self.count = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if epoch + 1 < self.first_epoch:
            return
        weights = [np.asarray(w, np.float64) for w in self.model.get_weights()]
        self.sum = weights if self.sum is None else [a + w for a, w in zip(self.sum, weights, strict=True)]
        self.count += 1

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.sum is not None:
            self.model.set_weights([(a / self.count).astype(np.float32) for a in self.sum])
            log.info("weights averaged over %d epochs", self.count)


def _callbacks(config: TrainingConfig, run: TrainingRun) -> list[keras.callbacks.Callback]:
    averaging = config.average_from_epoch > 0
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=not averaging,
            verbose=1,
        )
    ]  # fmt: skip
    if averaging:
        callbacks.append(WeightAverage(config.average_from_epoch))
    if run.log_dir is not None:
        if importlib.util.find_spec("tensorboard") is None:
            log.warning("tensorboard is not installed: no training logs (pip install 'faultprint[trainer]')")
        else:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.log_dir), write_graph=False))
    return callbacks


def validation_split(config: TrainingConfig, labels: np.ndarray, networks: np.ndarray | None,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(validation, training) window indices.

    With the network of each window known (and several networks), whole networks are held
    out: config.validation_networks of them (at most all but one), so that early stopping
    and the threshold measure networks the model never trained on. Otherwise a random
    config.validation_fraction of the windows.
    """
    names = np.unique(networks) if networks is not None else np.array([])
    if len(names) >= 2:
        held = rng.permutation(names)[: min(config.validation_networks, len(names) - 1)]
        is_val = np.isin(networks, held)  # type: ignore[arg-type]
        log.info("validation on %d held-out networks: %s", len(held), ", ".join(sorted(map(str, held))))
        return np.flatnonzero(is_val), np.flatnonzero(~is_val)
    order = rng.permutation(len(labels))
    n_val = max(int(len(labels) * config.validation_fraction), len(np.unique(labels)) * 2)
    return order[:n_val], order[n_val:]


def train(
    config: TrainingConfig, windows: np.ndarray, labels: np.ndarray, run: TrainingRun | None = None,
    networks: np.ndarray | None = None,
) -> TrainingResult:  # fmt: skip
    """Fits the scaler, trains the tower on mined triplets, and fits its distance threshold.

    networks, the network of each window, lets validation hold out whole networks (see
    validation_split). Training stops early when the validation loss has not improved for
    config.early_stopping_patience epochs, and keeps the best epoch's weights.
    """
    run = run or TrainingRun()
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    val, tr = validation_split(config, labels, networks, rng)
    with distribution_strategy(run.devices).scope():
        tower = build_tower(config.tower)
        tower.get_layer("feature_scaler").fit(windows[tr])
        model = SiameseModel(tower, config.margin)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    k = config.windows_per_class
    # A batch holds whole groups of k; an epoch draws epoch_size_factor x the training windows.
    size = min(config.batch_size // k, len(np.unique(labels))) * k
    per_epoch = config.batches_per_epoch or max(len(tr) * config.epoch_size_factor // size, 1)
    # Every epoch draws fresh batches: one epoch's worth, repeated, would revisit the same ones.
    train_batches = class_balanced_batches(labels[tr], per_epoch * config.epochs, size, k, rng)
    val_batches = class_balanced_batches(labels[val], max(len(val) * 2 // size, 1), size, k, rng)
    history = model.fit(
        batch_dataset(windows[tr], labels[tr], train_batches, augment=config).repeat(),
        steps_per_epoch=per_epoch,
        validation_data=batch_dataset(windows[val], labels[val], val_batches),
        epochs=config.epochs,
        shuffle=False,  # batches are drawn at random already
        callbacks=_callbacks(config, run),
        verbose=1 if run.progress_bar else 2,
    )
    val_embeddings = embed(tower, windows[val])
    threshold = fit_distance_threshold(val_embeddings, labels[val], config.threshold_quantile)
    accuracy = one_shot_accuracy(val_embeddings, labels[val], rng)
    log.info("validation one-shot accuracy %.3f, distance threshold %.3f", accuracy, threshold)
    return TrainingResult(
        tower=tower,
        distance_threshold=threshold,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        validation_one_shot_accuracy=accuracy,
    )
