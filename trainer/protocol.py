"""The transfer protocol: one-shot diagnosis on the rows of a network a model never saw, scored
as an operator meets it, so that the figure cannot flatter.

On each network of the evaluation rows:
- the first day is what an operator has when deploying: its windows marked normal are the
  normal references, and its windows, labels unread, are what the network's baseline is
  learned from (a server learns it from the network's normal cases and the unlabelled traffic
  an operator adds, see server/model/host.py);
- each fault is enrolled from k windows of the first day (k in ``shots``); a fault that never
  shows on the first day is enrolled from its first episode, whose windows are then not
  diagnosed;
- every window of the later days is diagnosed by its nearest reference, a case's distance
  being that of its nearest example (as the server computes it);
- the enrolled windows are redrawn ``draws`` times per k, and the diagnosed nodes are
  resampled ``node_samples`` times (a bootstrap over nodes: the population is nodes, not
  windows); each figure is the mean over draws and samples, with its spread (standard
  deviation) over both.

Scored per condition, then averaged (balanced accuracy: normal windows outnumber faulty ones
about 3 to 1, so plain accuracy flatters), with the share of normal windows diagnosed as a
fault (false alarms, the pages an operator gets for nothing) and the share beyond the model's
distance threshold (unknown). Beside the model, on the same references, two baselines that
learn nothing: raw 1-NN on the windows normalised as the model reads them, and the sceptic's
strong baseline, 1-NN on per-window summaries normalised per network by the median and
interquartile range of its first-day windows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faultprint.traffic.baseline import SCALE_FLOOR, NetworkBaseline, signed_log1p
from faultprint.traffic.simulator import NORMAL
from faultprint.traffic.windowing import WindowSet

MODEL = "model"
RAW_1NN = "raw_1nn"
STRONG_BASELINE = "strong_baseline"

CASE_MATCHING = ("nearest_example", "prototype")
# Windows of one node closer than this (start to start) belong to one fault episode.
EPISODE_GAP_MINUTES = 60


@dataclass(frozen=True)
class ProtocolOptions:
    """How the protocol samples; two models are comparable only under equal options."""

    # Fault windows enrolled per fault (k-shot) to report.
    shots: tuple[int, ...] = (1, 5)
    # Random draws of the enrolled fault windows, per k.
    draws: int = 5
    # Bootstrap samples of the diagnosed nodes, per draw.
    node_samples: int = 5
    # Minutes from a network's first row that are its first day (baseline and references).
    first_day_minutes: int = 1440
    # How a fault case of k windows is matched: by its nearest example (as the server does), or
    # as a whole by its prototype (the mean of its examples' vectors). Normal, a day of windows
    # across every hour, is always matched by its nearest example.
    case_matching: str = "nearest_example"
    seed: int = 2026

    def __post_init__(self) -> None:
        if self.case_matching not in CASE_MATCHING:
            raise ValueError(f"case_matching must be one of {CASE_MATCHING}, got {self.case_matching!r}")
        if not self.shots or min(self.shots) < 1:
            raise ValueError(f"shots must be positive, got {self.shots}")
        if min(self.draws, self.node_samples, self.first_day_minutes) < 1:
            raise ValueError("draws, node_samples and first_day_minutes must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shots": list(self.shots)}


@dataclass(frozen=True)
class NetworkSplit:
    """One network's windows, split into what an operator has on day one and what is diagnosed."""

    network: str
    cut: WindowSet
    first_day: np.ndarray  # (n,) bool: the window ends within the first day
    diagnosed: np.ndarray  # (n,) bool: later days, less the episodes enrolled from
    # Condition -> indices of the windows its references are drawn from.
    pools: dict[str, np.ndarray]
    # Faults that never show on the first day, enrolled from their first episode instead.
    from_first_episode: tuple[str, ...]

    @classmethod
    def of(cls, cut: WindowSet, first_day_minutes: int) -> NetworkSplit:
        networks = sorted(set(map(str, cut.network)))
        if len(networks) != 1:
            raise ValueError(f"a split holds one network's windows, got {networks}")
        steps = cut.windows.shape[1]
        day_one_ends = int(cut.start_minute.min()) + first_day_minutes
        first_day = cut.start_minute + steps <= day_one_ends
        later = cut.start_minute >= day_one_ends
        if not first_day.any() or not later.any():
            raise ValueError(f"network {networks[0]}: needs windows on its first day and after it")
        if not (first_day & (cut.labels == NORMAL)).any():
            raise ValueError(f"network {networks[0]}: no window of its first day is marked normal")
        pools, episode_enrolled, excluded = {}, [], np.zeros(len(cut.labels), dtype=bool)
        for condition in _conditions(cut.labels):
            pool = np.flatnonzero(first_day & (cut.labels == condition))
            if not len(pool):
                pool = first_episode(cut, condition)
                excluded[pool] = True
                episode_enrolled.append(condition)
            pools[condition] = pool
        return cls(networks[0], cut, first_day, later & ~excluded, pools, tuple(episode_enrolled))

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(self.pools)

    def baseline_windows(self) -> np.ndarray:
        """The first day's windows, labels unread: what the network's baseline is learned from."""
        return self.cut.windows[self.first_day]


def _conditions(labels: np.ndarray) -> list[str]:
    return sorted(set(map(str, labels)) - {""}, key=lambda c: (c != NORMAL, c))


def first_episode(cut: WindowSet, condition: str) -> np.ndarray:
    """Indices of the windows of the condition's earliest episode: the run of its windows on one
    node that begins first, consecutive windows starting at most EPISODE_GAP_MINUTES apart."""
    members = np.flatnonzero(cut.labels == condition)
    first = members[np.argmin(cut.start_minute[members])]
    same_node = members[cut.node[members] == cut.node[first]]
    same_node = same_node[np.argsort(cut.start_minute[same_node])]
    starts = cut.start_minute[same_node]
    at = int(np.flatnonzero(same_node == first)[0])
    breaks = np.flatnonzero(np.diff(starts) > EPISODE_GAP_MINUTES)
    end = next((int(b) + 1 for b in breaks if b >= at), len(same_node))
    return same_node[at:end]


# Maps a network's split to one vector per window of it (n, d), adapting to the network with
# what its first day offers; vectors are compared by Euclidean distance.
Method = Callable[[NetworkSplit], np.ndarray]


def window_summaries(windows: np.ndarray) -> np.ndarray:
    """Per statistic: the mean of the last 20 minutes, and the window's mean, max, min and
    standard deviation, after a signed log1p (n, 5 x features)."""
    logged = signed_log1p(windows.astype(np.float64))
    return np.concatenate(
        [logged[:, -20:].mean(1), logged.mean(1), logged.max(1), logged.min(1), logged.std(1)], axis=1
    )


def strong_baseline(split: NetworkSplit) -> np.ndarray:
    """The sceptic's baseline: window summaries normalised by the median and interquartile range
    (floored at SCALE_FLOOR) of the first day's summaries."""
    summaries = window_summaries(split.cut.windows)
    low, centre, high = np.percentile(summaries[split.first_day], (25, 50, 75), axis=0)
    return (summaries - centre) / np.maximum(high - low, SCALE_FLOOR)


def network_normalised(split: NetworkSplit) -> np.ndarray:
    """The split's windows normalised by the baseline learned from its first day."""
    return NetworkBaseline.fit(split.baseline_windows()).normalise(split.cut.windows)


def nearest(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the index of its nearest reference and the distance to it."""
    q, r = queries.astype(np.float64), references.astype(np.float64)
    squared = (q**2).sum(1)[:, None] - 2.0 * q @ r.T + (r**2).sum(1)[None, :]
    at = squared.argmin(axis=1)
    return at, np.sqrt(np.maximum(squared[np.arange(len(q)), at], 0.0))


@dataclass
class ShotScore:
    """One method's figures at one k, over every draw and node sample."""

    balanced_accuracy: float
    # Standard deviation over draws and node samples together; a bar counts at mean - spread.
    spread: float
    # Standard deviation of the per-draw means (which windows were enrolled).
    spread_draws: float
    # Mean over draws of the standard deviation over node samples (which nodes were diagnosed).
    spread_nodes: float
    # Share of normal windows diagnosed as a fault (and not as unknown).
    false_alarms: float
    # Share of windows farther than the distance threshold from every case (None: no threshold).
    unknown_rate: float | None
    # Mean recall of each condition.
    recall: dict[str, float] = field(default_factory=dict)

    @property
    def bar_figure(self) -> float:
        return self.balanced_accuracy - self.spread

    @property
    def lowest_fault_recall(self) -> float:
        return min((v for c, v in self.recall.items() if c != NORMAL), default=1.0)


@dataclass
class NetworkReport:
    """Every method's figures on one network."""

    network: str
    conditions: list[str]
    from_first_episode: list[str]
    diagnosed_windows: dict[str, int]
    nodes: int
    # method -> str(k) -> ShotScore
    methods: dict[str, dict[str, ShotScore]]

    def score(self, method: str = MODEL, k: int = 1) -> ShotScore:
        return self.methods[method][str(k)]


def score_method(vectors: np.ndarray, split: NetworkSplit, options: ProtocolOptions,
                 threshold: float | None) -> dict[str, ShotScore]:  # fmt: skip
    """Scores one method's vectors under the protocol; see the module docstring."""
    diagnosed = np.flatnonzero(split.diagnosed)
    truth = split.cut.labels[diagnosed]
    nodes, node_of = np.unique(split.cut.node[diagnosed], return_inverse=True)
    normal_refs = split.pools[NORMAL]
    faults = [c for c in split.conditions if c != NORMAL]
    scores = {}
    for k in options.shots:
        rng = np.random.default_rng([options.seed, k])
        per_draw: list[list[tuple[float, float, float, dict[str, float]]]] = []
        for _ in range(options.draws):
            picks = [
                rng.choice(split.pools[c], size=min(k, len(split.pools[c])), replace=False) for c in faults
            ]
            at, distance = nearest(vectors[diagnosed], _references(vectors, normal_refs, picks, options))
            per_case = [[c] if options.case_matching == "prototype" else [c] * len(p)
                        for c, p in zip(faults, picks, strict=True)]  # fmt: skip
            ref_labels = np.array([NORMAL] * len(normal_refs) + [c for labels in per_case for c in labels])
            predicted = ref_labels[at]
            unknown = distance > threshold if threshold is not None else np.zeros(len(at), dtype=bool)
            samples = []
            for _ in range(options.node_samples):
                weight = np.bincount(rng.integers(0, len(nodes), len(nodes)), minlength=len(nodes))[node_of]
                samples.append(_weighted_figures(truth, predicted, unknown, weight))
            per_draw.append(samples)
        scores[str(k)] = _summarise(per_draw, threshold is not None)
    return scores


def _references(vectors: np.ndarray, normal: np.ndarray, picks: list[np.ndarray],
                options: ProtocolOptions) -> np.ndarray:  # fmt: skip
    """The reference vectors: every normal example, then each fault case's examples (or prototype)."""
    if options.case_matching == "prototype":
        return np.concatenate([vectors[normal], *(vectors[p].mean(0, keepdims=True) for p in picks)])
    return np.concatenate([vectors[normal], *(vectors[p] for p in picks)])


def _weighted_figures(truth: np.ndarray, predicted: np.ndarray, unknown: np.ndarray,
                      weight: np.ndarray) -> tuple[float, float, float, dict[str, float]]:  # fmt: skip
    """(balanced accuracy, false alarms, unknown rate, recall by condition) of one node sample."""
    recall = {}
    for condition in np.unique(truth):
        w = weight * (truth == condition)
        if w.sum():
            recall[str(condition)] = float((w * (predicted == condition)).sum() / w.sum())
    normal = weight * (truth == NORMAL)
    alarms = float((normal * ((predicted != NORMAL) & ~unknown)).sum() / max(normal.sum(), 1))
    unknown_rate = float((weight * unknown).sum() / max(weight.sum(), 1))
    return float(np.mean(list(recall.values()))), alarms, unknown_rate, recall


def _summarise(per_draw: list[list[tuple[float, float, float, dict[str, float]]]],
               has_threshold: bool) -> ShotScore:  # fmt: skip
    balanced = np.array([[s[0] for s in samples] for samples in per_draw])
    flat = [s for samples in per_draw for s in samples]
    conditions = sorted({c for s in flat for c in s[3]})
    return ShotScore(
        balanced_accuracy=float(balanced.mean()),
        spread=float(balanced.std()),
        spread_draws=float(balanced.mean(axis=1).std()),
        spread_nodes=float(balanced.std(axis=1).mean()),
        false_alarms=float(np.mean([s[1] for s in flat])),
        unknown_rate=float(np.mean([s[2] for s in flat])) if has_threshold else None,
        recall={c: float(np.mean([s[3][c] for s in flat if c in s[3]])) for c in conditions},
    )


def evaluate_network(split: NetworkSplit, methods: dict[str, tuple[Method, float | None]],
                     options: ProtocolOptions) -> NetworkReport:  # fmt: skip
    """Scores each method (name -> (method, distance threshold or None)) on one network."""
    diagnosed = split.cut.labels[split.diagnosed]
    return NetworkReport(
        network=split.network,
        conditions=list(split.conditions),
        from_first_episode=list(split.from_first_episode),
        diagnosed_windows={c: int((diagnosed == c).sum()) for c in split.conditions},
        nodes=len(set(map(str, split.cut.node[split.diagnosed]))),
        methods={
            name: score_method(method(split), split, options, threshold)
            for name, (method, threshold) in methods.items()
        },
    )


def splits_of(cut: WindowSet, options: ProtocolOptions) -> list[NetworkSplit]:
    """One split per network in the windows, in name order."""
    return [NetworkSplit.of(cut.select(cut.network == n), options.first_day_minutes)
            for n in sorted(set(map(str, cut.network)))]  # fmt: skip


def tower_method(tower: Any, network_baseline: bool) -> tuple[Method, Method]:
    """(model embeddings, raw windows as the model reads them) of a Keras tower.

    A tower that reads windows normalised by their network's baseline gets them normalised by
    the baseline learned from the split's first day; raw 1-NN compares those normalised windows.
    Otherwise the tower reads raw windows and raw 1-NN compares them through its own scaler.
    """
    scaler = tower.get_layer("feature_scaler")

    def model_input(split: NetworkSplit) -> np.ndarray:
        return network_normalised(split) if network_baseline else split.cut.windows

    def model(split: NetworkSplit) -> np.ndarray:
        return np.asarray(tower.predict(model_input(split), batch_size=512, verbose=0))

    def raw(split: NetworkSplit) -> np.ndarray:
        read = model_input(split) if network_baseline else np.asarray(scaler(split.cut.windows))
        return read.reshape(len(read), -1)

    return model, raw


def evaluate_networks(cut: WindowSet, methods: dict[str, tuple[Method, float | None]],
                      options: ProtocolOptions) -> list[NetworkReport]:  # fmt: skip
    """Each method on every network of the windows."""
    return [evaluate_network(split, methods, options) for split in splits_of(cut, options)]


def evaluate_tower_on(cut: WindowSet, tower: Any, threshold: float, network_baseline: bool,
                      options: ProtocolOptions) -> list[NetworkReport]:  # fmt: skip
    """The model and both baselines on every network of the windows."""
    model, raw = tower_method(tower, network_baseline)
    methods = {MODEL: (model, threshold), RAW_1NN: (raw, None), STRONG_BASELINE: (strong_baseline, None)}
    return evaluate_networks(cut, methods, options)


def reports_to_dict(reports: Sequence[NetworkReport], options: ProtocolOptions) -> dict[str, Any]:
    return {"protocol": options.to_dict(), "networks": [asdict(r) for r in reports]}


def reports_from_dict(raw: dict[str, Any]) -> list[NetworkReport]:
    reports = []
    for network in raw["networks"]:
        methods = {
            name: {k: ShotScore(**s) for k, s in shots.items()} for name, shots in network["methods"].items()
        }
        reports.append(NetworkReport(**{**network, "methods": methods}))
    return reports


def _cell(score: ShotScore) -> str:
    return f"{score.balanced_accuracy:.3f} ± {score.spread:.3f}"


def report_markdown(reports: Sequence[NetworkReport], options: ProtocolOptions, version: str) -> str:
    """The protocol's figures as markdown: the closing note's and the operator's view."""
    lines = [
        f"# Transfer protocol: {version} on networks it never saw",
        "",
        f"Faults enrolled from k windows of each network's first day, normal from its first day; every "
        f"window of the later days diagnosed. Balanced accuracy (mean recall over conditions), mean ± "
        f"spread over {options.draws} draws of the enrolled windows x {options.node_samples} bootstrap "
        f"samples of the nodes (seed {options.seed}).",
    ]
    for report in reports:
        lines += ["", f"## {report.network}", "",
                  f"{report.nodes} nodes; diagnosed windows: "
                  + ", ".join(f"{c} {n}" for c, n in report.diagnosed_windows.items())]  # fmt: skip
        if report.from_first_episode:
            lines.append(f"Not on the first day, enrolled from their first episode: "
                         f"{', '.join(report.from_first_episode)}.")  # fmt: skip
        lines += ["", "| method | " + " | ".join(f"balanced accuracy, k = {k} | false alarms, k = {k}"
                                                   for k in options.shots) + " | unknown, k = 1 |",
                  "|---|" + "---:|---:|" * len(options.shots) + "---:|"]  # fmt: skip
        for name, shots in report.methods.items():
            cells = " | ".join(
                f"{_cell(shots[str(k)])} | {shots[str(k)].false_alarms:.3f}" for k in options.shots
            )
            unknown = shots[str(min(options.shots))].unknown_rate
            lines.append(f"| {name} | {cells} | {'—' if unknown is None else f'{unknown:.3f}'} |")
        k1 = str(min(options.shots))
        lines += ["", f"Recall by condition at k = {k1}:", "",
                  "| condition | " + " | ".join(report.methods) + " |",
                  "|---|" + "---:|" * len(report.methods)]  # fmt: skip
        for condition in report.conditions:
            cells = " | ".join(f"{shots[k1].recall.get(condition, float('nan')):.2f}"
                               for shots in report.methods.values())  # fmt: skip
            lines.append(f"| {condition} | {cells} |")
    return "\n".join(lines) + "\n"


def write_reports(reports: Sequence[NetworkReport], options: ProtocolOptions, version: str,
                  out_dir: Path) -> list[Path]:  # fmt: skip
    """Writes transfer.json and transfer.md into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "transfer.json").write_text(json.dumps(reports_to_dict(reports, options), indent=2))
    (out_dir / "transfer.md").write_text(report_markdown(reports, options, version))
    return [out_dir / "transfer.json", out_dir / "transfer.md"]
