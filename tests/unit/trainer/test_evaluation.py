"""The one-shot evaluation protocol, scored with embedders whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.trainer.evaluation import (
    BASELINE,
    MODEL,
    EvaluationOptions,
    EvaluationReport,
    EvaluationSplit,
    evaluate,
    evaluate_method,
    nearest_labels,
    report_markdown,
)

CONDITIONS = ("normal", "hss_unreachable", "dns_failure")
OPTIONS = EvaluationOptions(reference_pool_per_condition=5, test_windows_per_condition=8, trials=3)


def labelled_windows(rng: np.random.Generator, per_condition: int = 13) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, 2, 3) whose first statistic is the condition's index plus small noise."""
    labels = np.repeat(np.array(CONDITIONS), per_condition)
    windows = rng.normal(0.0, 0.05, size=(len(labels), 2, 3)).astype(np.float32)
    windows[:, :, 0] += np.array([CONDITIONS.index(c) for c in labels])[:, None]
    return windows, labels


def first_statistic(windows: np.ndarray) -> np.ndarray:
    """A perfect 'model': the mean of the statistic that carries the condition."""
    return windows[:, :, 0].mean(axis=1, keepdims=True)


def noise(windows: np.ndarray) -> np.ndarray:
    """A useless 'model': the statistics that carry no condition."""
    return windows[:, :, 1:].reshape(len(windows), -1)


@pytest.fixture
def split() -> EvaluationSplit:
    rng = np.random.default_rng(0)
    windows, labels = labelled_windows(rng)
    base = EvaluationSplit.from_windows(windows, labels, OPTIONS.reference_pool_per_condition, rng)
    borrowed = windows[labels == "normal"][:1]
    return EvaluationSplit(base.pool, base.test, base.test_labels, base.conditions, borrowed)


def test_nearest_labels_match_a_brute_force_search() -> None:
    rng = np.random.default_rng(3)
    queries, refs = rng.normal(size=(20, 4)), rng.normal(size=(7, 4))
    ref_labels = np.array(list("abcdefg"))
    labels, distances = nearest_labels(queries, refs, ref_labels)
    full = np.linalg.norm(queries[:, None] - refs[None], axis=-1)
    assert (labels == ref_labels[full.argmin(1)]).all()
    np.testing.assert_allclose(distances, full.min(1), atol=1e-9)


def test_the_split_keeps_references_apart_from_the_held_out_windows(split: EvaluationSplit) -> None:
    assert split.pool.shape[:2] == (3, 5)
    assert len(split.test_labels) == 3 * 8
    assert split.conditions[0] == "normal"
    pooled = {w.tobytes() for w in split.pool.reshape(-1, 2, 3)}
    assert not pooled & {w.tobytes() for w in split.test}


def test_real_data_splits_hold_out_at_most_the_same_number_of_windows_per_condition() -> None:
    rng = np.random.default_rng(1)
    windows, labels = labelled_windows(rng, per_condition=40)
    split = EvaluationSplit.from_windows(windows, labels, 5, rng, test_per_condition=8)
    assert sorted(np.unique(split.test_labels, return_counts=True)[1]) == [8, 8, 8]


def test_a_separating_embedder_scores_perfectly_with_a_full_confusion_matrix(split: EvaluationSplit) -> None:
    report = evaluate_method(first_statistic, split, OPTIONS, threshold=0.5)
    assert report.accuracy == {1: 1.0, 5: 1.0}
    assert report.unknown_rate == {1: 0.0, 5: 0.0}
    assert report.recall == dict.fromkeys(CONDITIONS, 1.0)
    for c in CONDITIONS:  # every held-out window, once per draw, on the diagonal
        assert report.confusion[c] == {d: (8 * 3 if d == c else 0) for d in CONDITIONS}


def test_without_a_normal_reference_normal_windows_are_unknown_not_false_alarms(
    split: EvaluationSplit,
) -> None:
    report = evaluate_method(first_statistic, split, OPTIONS, threshold=0.5)
    assert report.no_normal == {
        "normal_false_alarm": 0.0,
        "normal_flagged_unknown": 1.0,
        "fault_accuracy": 1.0,
        "borrowed_normal_accuracy": 1.0,
    }
    # Without a threshold every normal window gets the nearest fault's label.
    assert (
        evaluate_method(first_statistic, split, OPTIONS, threshold=None).no_normal["normal_false_alarm"]
        == 1.0
    )


def test_an_embedder_that_ignores_the_condition_scores_near_chance(split: EvaluationSplit) -> None:
    report = evaluate_method(noise, split, OPTIONS, threshold=None)
    assert report.accuracy[1] < 0.6
    assert report.unknown_rate[1] is None


def test_the_report_compares_model_and_baseline_and_round_trips(split: EvaluationSplit) -> None:
    report = evaluate(first_statistic, lambda w: w[:, :, 1:], split, OPTIONS, threshold=0.5)
    assert report.headline() == 1.0
    assert report.headline(BASELINE) < 0.6
    again = EvaluationReport.from_dict(report.to_dict())
    assert again.methods[MODEL].accuracy == report.methods[MODEL].accuracy
    text = report_markdown(report, "v1")
    assert "| accuracy, k = 1 | 1.000 ± 0.000 |" in text
    assert "| dns_failure | 1.000 |" in text


def test_options_refuse_shots_beyond_the_pool() -> None:
    with pytest.raises(ValueError, match="shots"):
        EvaluationOptions(shots=(1, 10), reference_pool_per_condition=5)
    with pytest.raises(ValueError, match="unknown network"):
        EvaluationOptions(network="atlantis").check_simulated()
