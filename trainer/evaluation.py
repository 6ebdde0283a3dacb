"""One-shot evaluation on a network the model never saw: the figures a model earns its place with.

The protocol is the operator's: on a new network, enrol k windows per condition as
reference cases, then diagnose that network's other windows by their nearest case
(a case's distance is that of its nearest example, as the server computes it). The
same split is scored twice: with the model's embeddings, and with the baseline a
sceptic would try first, 1-nearest-neighbour on the raw windows normalised as the
model normalises its input. A model that does not beat that baseline has not learnt
anything worth serving.

Reported for each method, averaged over several random draws of the references:
accuracy for each k in ``shots``, per-class recall and the confusion matrix at k=1,
the share of windows beyond the model's distance threshold (diagnosed unknown), and
what happens without a "normal" reference from the new network: with none at all,
and with one borrowed from a training network.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faultprint.traffic.simulator import CONDITIONS, NORMAL, PROFILES, simulate_windows
from faultprint.trainer.protocol import nearest

# Maps windows (n, steps, features) to vectors (n, d) that are compared by Euclidean distance.
Embed = Callable[[np.ndarray], np.ndarray]

MODEL = "model"
BASELINE = "raw_1nn"


@dataclass(frozen=True)
class EvaluationOptions:
    """The evaluation split and protocol; two models are comparable only under equal options."""

    # The network the evaluation enrols and diagnoses on; must not be a training network.
    network: str = "island-apac"
    # Windows per condition that may be drawn as references (the largest k of shots).
    reference_pool_per_condition: int = 5
    # Held-out windows per condition that are diagnosed.
    test_windows_per_condition: int = 30
    # Reference windows per condition (k-shot) to report.
    shots: tuple[int, ...] = (1, 5)
    # Random draws of the references; figures are their mean.
    trials: int = 5
    # A training network that lends its normal reference when the new network has none.
    borrowed_normal_network: str = "metro-eu"
    seed: int = 2026

    def __post_init__(self) -> None:
        if min(self.shots) < 1 or max(self.shots) > self.reference_pool_per_condition:
            raise ValueError(f"shots {self.shots} must lie in [1, {self.reference_pool_per_condition}]")
        if min(self.trials, self.test_windows_per_condition) < 1:
            raise ValueError("trials and test_windows_per_condition must be positive")

    def check_simulated(self) -> None:
        """Both networks must be simulator profiles when the evaluation is simulated."""
        for name in (self.network, self.borrowed_normal_network):
            if name not in PROFILES:
                raise ValueError(f"unknown network {name!r}; known: {sorted(PROFILES)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shots": list(self.shots)}


@dataclass(frozen=True)
class EvaluationSplit:
    """Reference pool and held-out windows of one network, plus a borrowed normal reference."""

    pool: np.ndarray  # (conditions, pool, steps, features)
    test: np.ndarray  # (n, steps, features)
    test_labels: np.ndarray  # (n,)
    conditions: tuple[str, ...]
    borrowed_normal: np.ndarray | None  # (1, steps, features), or None without a normal condition

    @classmethod
    def from_windows(
        cls,
        windows: np.ndarray,
        labels: np.ndarray,
        pool_size: int,
        rng: np.random.Generator,
        test_per_condition: int | None = None,
    ) -> EvaluationSplit:
        """Splits labelled windows of one network: pool_size per condition to draw references from,
        and at most test_per_condition held out per condition (so that accuracy weighs every
        condition alike, however many windows real data has of each)."""
        conditions = tuple(sorted(set(map(str, labels)), key=lambda c: (c != NORMAL, c)))
        pool, test = [], []
        for c in conditions:
            members = rng.permutation(np.flatnonzero(labels == c))
            if len(members) <= pool_size:
                raise ValueError(f"condition {c!r} has {len(members)} windows; needs over {pool_size}")
            pool.append(windows[members[:pool_size]])
            test.append(members[pool_size:][:test_per_condition])
        chosen = np.concatenate(test)
        return cls(np.stack(pool), windows[chosen], labels[chosen].astype(str), conditions, None)


@functools.lru_cache(maxsize=4)
def simulated_split(options: EvaluationOptions, conditions: tuple[str, ...], steps: int) -> EvaluationSplit:
    """The evaluation network's windows, simulated deterministically from options.seed.

    Cached: comparing two models scores both on one simulation (callers do not modify it).
    """
    options.check_simulated()
    per_condition = options.reference_pool_per_condition + options.test_windows_per_condition
    windows, labels = simulate_windows(PROFILES[options.network], conditions, per_condition, options.seed,
                                       steps)  # fmt: skip
    split = EvaluationSplit.from_windows(
        windows, labels, options.reference_pool_per_condition, np.random.default_rng(options.seed)
    )
    borrowed = None
    if NORMAL in conditions:
        borrowed, _ = simulate_windows(PROFILES[options.borrowed_normal_network], [NORMAL], 1,
                                       options.seed + 1, steps)  # fmt: skip
    return EvaluationSplit(split.pool, split.test, split.test_labels, split.conditions, borrowed)


def nearest_labels(
    queries: np.ndarray, references: np.ndarray, reference_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query vector, the label of its nearest reference and the distance to it."""
    at, distances = nearest(queries, references)
    return reference_labels[at], distances


@dataclass
class MethodReport:
    """One method's figures on the split."""

    # k -> mean accuracy (nearest case's label is the true condition) over the trials.
    accuracy: dict[int, float] = field(default_factory=dict)
    # k -> standard deviation of that accuracy over the trials.
    accuracy_std: dict[int, float] = field(default_factory=dict)
    # k -> share of windows farther than the threshold from every case (None without a threshold).
    unknown_rate: dict[int, float | None] = field(default_factory=dict)
    # Per condition, the share of its windows diagnosed as it, at k=1.
    recall: dict[str, float] = field(default_factory=dict)
    # confusion[true][diagnosed] = windows, summed over the trials, at k=1.
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    # Without a normal reference from the new network, at k=1 (see _no_normal).
    no_normal: dict[str, float | None] = field(default_factory=dict)


class _Scorer:
    """Scores one method: vectors of the pool and test windows, computed once, and the draws."""

    def __init__(self, embed: Embed, split: EvaluationSplit, threshold: float | None) -> None:
        c, p = split.pool.shape[:2]
        self.split = split
        self.pool = embed(split.pool.reshape(c * p, *split.pool.shape[2:])).reshape(c, p, -1)
        self.test = embed(split.test)
        self.borrowed = None if split.borrowed_normal is None else embed(split.borrowed_normal)
        self.threshold = threshold
        self.labels = np.array(split.conditions)

    def draw(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        picks = np.stack([rng.choice(self.pool.shape[1], size=k, replace=False) for _ in self.labels])
        refs = np.concatenate([self.pool[i, picks[i]] for i in range(len(self.labels))])
        return refs, np.repeat(self.labels, k)

    def unknown(self, distances: np.ndarray) -> np.ndarray:
        if self.threshold is None:
            return np.zeros(len(distances), dtype=bool)
        return distances > self.threshold


def evaluate_method(embed: Embed, split: EvaluationSplit, options: EvaluationOptions,
                    threshold: float | None) -> MethodReport:  # fmt: skip
    """Scores one method on the split with every k of options.shots; see the module docstring."""
    scorer = _Scorer(embed, split, threshold)
    report = MethodReport()
    truth = split.test_labels
    for k in options.shots:
        rng = np.random.default_rng(options.seed + k)
        scores, unknowns, predictions = [], [], []
        for _ in range(options.trials):
            predicted, distances = nearest_labels(scorer.test, *scorer.draw(k, rng))
            scores.append(float((predicted == truth).mean()))
            unknowns.append(float(scorer.unknown(distances).mean()))
            predictions.append(predicted)
        report.accuracy[k] = float(np.mean(scores))
        report.accuracy_std[k] = float(np.std(scores))
        report.unknown_rate[k] = None if threshold is None else float(np.mean(unknowns))
        if k == min(options.shots):
            _confusion(report, np.tile(truth, options.trials), np.concatenate(predictions), split.conditions)
    report.no_normal = _no_normal(scorer, options)
    return report


def _confusion(report: MethodReport, truth: np.ndarray, predicted: np.ndarray,
               conditions: Sequence[str]) -> None:  # fmt: skip
    for c in conditions:
        mine = predicted[truth == c]
        report.confusion[c] = {d: int((mine == d).sum()) for d in conditions}
        report.recall[c] = float((mine == c).mean()) if len(mine) else 0.0


def _no_normal(scorer: _Scorer, options: EvaluationOptions) -> dict[str, float | None]:
    """One reference per fault and none for normal from the new network.

    - normal_false_alarm: share of normal windows given a fault's label and not flagged
      unknown (the operator is paged for nothing);
    - normal_flagged_unknown: share of normal windows beyond the threshold (None without one);
    - fault_accuracy: accuracy on the fault windows;
    - borrowed_normal_accuracy: accuracy on all windows when the normal reference comes
      from a training network instead (None when there is no normal condition).
    """
    labels = scorer.labels
    if NORMAL not in labels:
        return {}
    rng = np.random.default_rng(options.seed + 100)
    truth = scorer.split.test_labels
    is_normal = truth == NORMAL
    false_alarm, flagged, fault_accuracy, borrowed_accuracy = [], [], [], []
    for _ in range(options.trials):
        refs, ref_labels = scorer.draw(1, rng)
        keep = ref_labels != NORMAL
        predicted, distances = nearest_labels(scorer.test, refs[keep], ref_labels[keep])
        unknown = scorer.unknown(distances)
        false_alarm.append(float((~unknown[is_normal]).mean()))
        flagged.append(float(unknown[is_normal].mean()))
        fault_accuracy.append(float((predicted[~is_normal] == truth[~is_normal]).mean()))
        if scorer.borrowed is not None:
            with_borrowed = np.concatenate([refs[keep], scorer.borrowed])
            borrowed_labels = np.concatenate([ref_labels[keep], [NORMAL] * len(scorer.borrowed)])
            predicted, _ = nearest_labels(scorer.test, with_borrowed, borrowed_labels)
            borrowed_accuracy.append(float((predicted == truth).mean()))
    return {
        "normal_false_alarm": float(np.mean(false_alarm)),
        "normal_flagged_unknown": float(np.mean(flagged)) if scorer.threshold is not None else None,
        "fault_accuracy": float(np.mean(fault_accuracy)),
        "borrowed_normal_accuracy": float(np.mean(borrowed_accuracy)) if borrowed_accuracy else None,
    }


@dataclass
class EvaluationReport:
    """The model against the raw 1-NN baseline on one split."""

    network: str
    options: dict[str, Any]
    conditions: list[str]
    test_windows: int
    distance_threshold: float
    methods: dict[str, MethodReport]

    def headline(self, method: str = MODEL) -> float:
        """The figure publishing compares: mean one-shot accuracy."""
        report = self.methods[method]
        return report.accuracy[min(report.accuracy)]

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        for m in raw["methods"].values():
            for key in ("accuracy", "accuracy_std", "unknown_rate"):
                m[key] = {str(k): v for k, v in m[key].items()}
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvaluationReport:
        methods = {}
        for name, m in raw["methods"].items():
            fields = dict(m)
            for key in ("accuracy", "accuracy_std", "unknown_rate"):
                fields[key] = {int(k): v for k, v in m[key].items()}
            methods[name] = MethodReport(**fields)
        return cls(**{**raw, "methods": methods})


def evaluate(model_embed: Embed, normalise: Embed, split: EvaluationSplit, options: EvaluationOptions,
             threshold: float) -> EvaluationReport:  # fmt: skip
    """Scores the model's embeddings and the raw 1-NN baseline on the same split."""

    def raw(windows: np.ndarray) -> np.ndarray:
        return normalise(windows).reshape(len(windows), -1)

    return EvaluationReport(
        network=options.network,
        options=options.to_dict(),
        conditions=list(split.conditions),
        test_windows=len(split.test_labels),
        distance_threshold=threshold,
        methods={
            MODEL: evaluate_method(model_embed, split, options, threshold),
            BASELINE: evaluate_method(raw, split, options, None),
        },
    )


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def report_markdown(report: EvaluationReport, version: str) -> str:
    """The evaluation as markdown tables: the closing note's and the operator's view."""
    model, base = report.methods[MODEL], report.methods[BASELINE]
    opts = report.options
    lines = [
        f"# One-shot evaluation of {version} on {report.network} (never seen in training)",
        "",
        f"{report.test_windows} held-out windows of {len(report.conditions)} conditions; references "
        f"drawn from {opts['reference_pool_per_condition']} per condition, mean of {opts['trials']} "
        f"draws (seed {opts['seed']}); distance threshold {report.distance_threshold:.3f}.",
        "",
        "| | model | raw 1-NN baseline |",
        "|---|---:|---:|",
    ]
    for k in model.accuracy:
        lines.append(f"| accuracy, k = {k} | {model.accuracy[k]:.3f} ± {model.accuracy_std[k]:.3f} "
                     f"| {base.accuracy[k]:.3f} ± {base.accuracy_std[k]:.3f} |")  # fmt: skip
        lines.append(f"| unknown rate, k = {k} | {_figure(model.unknown_rate[k])} | — |")
    for key, name in (("fault_accuracy", "no normal reference: accuracy on faults"),
                      ("normal_false_alarm", "no normal reference: normal windows given a fault"),
                      ("normal_flagged_unknown", "no normal reference: normal windows flagged unknown"),
                      ("borrowed_normal_accuracy", f"normal borrowed from {opts['borrowed_normal_network']}: "
                                                   "accuracy")):  # fmt: skip
        if key in model.no_normal:
            lines.append(f"| {name} | {_figure(model.no_normal[key])} | {_figure(base.no_normal[key])} |")
    lines += ["", "Per-class recall at k = 1:", "", "| condition | model | raw 1-NN |", "|---|---:|---:|"]
    lines += [f"| {c} | {model.recall[c]:.3f} | {base.recall[c]:.3f} |" for c in report.conditions]
    lines += ["", "Confusion of the model at k = 1 (rows: true condition; columns: diagnosed), summed "
              "over the draws:", ""]  # fmt: skip
    short = [c[:10] for c in report.conditions]
    lines.append("| true \\ diagnosed | " + " | ".join(short) + " |")
    lines.append("|---|" + "---:|" * len(short))
    for c in report.conditions:
        lines.append(f"| {c} | " + " | ".join(str(model.confusion[c][d]) for d in report.conditions) + " |")
    return "\n".join(lines) + "\n"


def trained_conditions(training: dict[str, Any]) -> tuple[str, ...]:
    """The conditions a model was trained on, from its metadata's training record (all if unrecorded)."""
    return tuple(training.get("config", {}).get("conditions") or CONDITIONS)


def tower_embedders(tower: Any) -> tuple[Embed, Embed]:
    """(model embeddings, the model's own input normalisation) of a Keras tower."""
    scaler = tower.get_layer("feature_scaler")

    def model_embed(windows: np.ndarray) -> np.ndarray:
        return np.asarray(tower.predict(windows, batch_size=256, verbose=0))

    def normalise(windows: np.ndarray) -> np.ndarray:
        return np.asarray(scaler(windows))

    return model_embed, normalise


def evaluate_tower(
    tower: Any,
    threshold: float,
    conditions: Sequence[str],
    options: EvaluationOptions,
    steps: int,
    split: EvaluationSplit | None = None,
) -> tuple[EvaluationReport, EvaluationSplit]:
    """Scores the tower and the baseline on split (default: the simulated evaluation network)."""
    split = split or simulated_split(options, tuple(conditions), steps)
    return evaluate(*tower_embedders(tower), split, options, threshold), split


def write_evaluation(report: EvaluationReport, split: EvaluationSplit, tower: Any, version: str,
                     history: dict[str, list[float]] | None, out_dir: Path) -> list[Path]:  # fmt: skip
    """Writes evaluation.json, evaluation.md and the PNG plots into out_dir; returns the files."""
    from faultprint.trainer import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2))
    (out_dir / "evaluation.md").write_text(report_markdown(report, version))
    written = [out_dir / "evaluation.json", out_dir / "evaluation.md"]
    model_embed, normalise = tower_embedders(tower)
    refs = split.pool[:, 0]
    ref_labels = np.array(split.conditions)
    panels = [
        ("normalised raw windows", normalise(split.test).reshape(len(split.test), -1),
         normalise(refs).reshape(len(refs), -1)),
        (f"embeddings of {version}", model_embed(split.test), model_embed(refs)),
    ]  # fmt: skip
    title = f"{report.network} (unseen): held-out windows and one-shot references (stars), first 2 PCs"
    figures = [
        plots.embedding_projection(
            panels, split.test_labels, ref_labels, title, out_dir / "embedding_projection.png"
        ),
        plots.training_curves(history or {}, f"training of {version}", out_dir / "training_curves.png"),
    ]
    return written + [f for f in figures if f is not None]
