"""Online semi-hard mining: the batched loss matches a brute-force reading of its definition."""

from __future__ import annotations

import numpy as np

from faultprint.trainer.training import class_balanced_batches, semi_hard_triplet_loss


def brute_force(labels: np.ndarray, emb: np.ndarray, margin: float) -> float:
    d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    losses = []
    for a in range(len(labels)):
        for p in range(len(labels)):
            if a == p or labels[a] != labels[p]:
                continue
            negatives = d[a, labels != labels[a]]
            farther = negatives[negatives > d[a, p]]
            chosen = farther.min() if farther.size else negatives.max()
            losses.append(max(d[a, p] - chosen + margin, 0.0))
    return float(np.mean(losses))


def test_semi_hard_negative_is_the_nearest_one_beyond_the_positive() -> None:
    emb = np.array([[0, 0], [1, 0], [0, 1.05], [0, 3]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    # Pair (0, 1): d_ap = 1; negatives at 1.1025 (semi-hard) and 9; loss 1 - 1.1025 + 0.2.
    loss = float(semi_hard_triplet_loss(labels, emb, 0.2))
    assert np.isclose(loss, brute_force(labels, emb, 0.2), atol=1e-5)
    assert loss > 0


def test_matches_brute_force_on_random_batches_and_is_zero_when_classes_are_far_apart() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 3, 16)
        emb = rng.normal(size=(16, 4)).astype(np.float32)
        assert np.isclose(
            float(semi_hard_triplet_loss(labels, emb, 0.2)), brute_force(labels, emb, 0.2), atol=1e-4
        )
    separated = np.array([[0, 0], [0, 0.1], [5, 5], [5, 5.1]], dtype=np.float32)
    assert float(semi_hard_triplet_loss(np.array([0, 0, 1, 1]), separated, 0.2)) == 0.0


def test_class_balanced_batches_hold_k_windows_of_each_chosen_condition() -> None:
    labels = np.repeat(np.array(["normal", "a", "b", "c", "d"]), 10)
    batches = class_balanced_batches(labels, 6, 16, 4, np.random.default_rng(1))
    assert batches.shape == (6, 16)
    for batch in batches:
        _, counts = np.unique(labels[batch], return_counts=True)
        assert sorted(counts) == [4, 4, 4, 4]
