"""Triplet training of the embedding tower, and the fitting of its distance threshold.

The Siamese wrapper embeds anchor, positive and negative windows with one shared
tower and minimises the triplet loss; only the tower is exported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from encoder.tower import build_tower
from trainer.config import TrainingConfig

log = logging.getLogger(__name__)


def triplet_loss(anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, margin: float) -> tf.Tensor:
    """mean over triplets of max(|a - p|^2 - |a - n|^2 + margin, 0)."""
    pos = tf.reduce_sum(tf.square(anchor - positive), axis=-1)
    neg = tf.reduce_sum(tf.square(anchor - negative), axis=-1)
    return tf.reduce_mean(tf.maximum(pos - neg + margin, 0.0))


class SiameseModel(keras.Model):
    """Training wrapper: three windows in, one shared tower, triplet loss out."""

    def __init__(self, tower: keras.Model, margin: float) -> None:
        super().__init__()
        self.tower = tower
        self.margin = margin
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=False):
        anchor, positive, negative = inputs
        return (
            self.tower(anchor, training=training),
            self.tower(positive, training=training),
            self.tower(negative, training=training),
        )

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = triplet_loss(*self(data, training=True), self.margin)
        variables = self.tower.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(triplet_loss(*self(data, training=False), self.margin))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def sample_triplets(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """count rows of (anchor, positive, negative) indices: same label, other label."""
    classes = np.unique(labels)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    anchor_class = rng.choice(classes, size=count)
    triplets = np.empty((count, 3), dtype=np.int64)
    for c in classes:
        rows = np.flatnonzero(anchor_class == c)
        others = np.flatnonzero(labels != c)
        triplets[rows, 0] = rng.choice(members[c], size=rows.size)
        triplets[rows, 1] = rng.choice(members[c], size=rows.size)
        triplets[rows, 2] = rng.choice(others, size=rows.size)
    return triplets


def triplet_dataset(windows: np.ndarray, triplets: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of (anchor, positive, negative) windows gathered from index triplets."""
    table = tf.constant(windows)

    def gather(rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return tf.gather(table, rows[:, 0]), tf.gather(table, rows[:, 1]), tf.gather(table, rows[:, 2])

    return (
        tf.data.Dataset.from_tensor_slices(triplets)
        .batch(batch_size)
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


def train(config: TrainingConfig, windows: np.ndarray, labels: np.ndarray) -> TrainingResult:
    """Fits the scaler, trains the tower on triplets, and fits its distance threshold."""
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(labels))
    n_val = max(int(len(labels) * config.validation_fraction), len(np.unique(labels)) * 2)
    val, tr = order[:n_val], order[n_val:]
    tower = build_tower(config.tower)
    tower.get_layer("feature_scaler").fit(windows[tr])
    model = SiameseModel(tower, config.margin)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    train_triplets = sample_triplets(labels[tr], len(tr) * config.triplets_per_window, rng)
    val_triplets = sample_triplets(labels[val], len(val) * 2, rng)
    history = model.fit(
        triplet_dataset(windows[tr], train_triplets, config.batch_size),
        validation_data=triplet_dataset(windows[val], val_triplets, config.batch_size),
        epochs=config.epochs,
        shuffle=False,  # triplets are drawn at random already
        verbose=2,
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
