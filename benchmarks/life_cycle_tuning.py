"""Measures the incident settings: the node condition life cycle replayed over every minute's diagnosis.

``python -m benchmarks.life_cycle_tuning --artifact DIR`` diagnoses, offline and with the
server's own pieces, every minute of

- simulated fleets with injected faults (benchmarks/incident_truth.py: networks never trained
  on, each enrolled with a day of normal and ONE window per fault), and
- the foreign operators' traffic (../shared/foreign-traffic, from a generator the project
  did not write; never trained on): per network the first day is the baseline and the
  normal references, each fault is enrolled from its first window, and the later days are
  streamed, each node's ring holding the first day's last hour as a streaming server's
  would; a fault first seen after the first day is enrolled from its first episode,
  which is then not scored (that node's episode only: the same fault on other nodes is);

each node's minutes going through NodeWindows (the server's ring and repairs), the model
(read against the network's baseline), the reference index's match and the departure from
normal the monitor computes. It caches those per-minute diagnoses, then replays
NodeLifeCycle under the defaults and under each setting of SWEEP (one option moved at a
time, the rest at their defaults) and scores the incidents against the truth as the
end-to-end scenario does (incident_truth.score). The fleet's size is set by --networks,
--nodes-per-network and --days (the scenario's own fleet: 5, 100, 3). Results:
benchmarks/results/life-cycle-tuning.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from benchmarks.incident_truth import (
    START,
    FleetOptions,
    Found,
    Truth,
    score,
    simulate_networks,
)
from benchmarks.launcher import ROOT
from faultprint.server.monitoring.life_cycle import LifeCycleOptions, MinuteDiagnosis, NodeLifeCycle
from faultprint.server.monitoring.node_windows import Arrival, NodeWindows
from faultprint.server.references.index import CaseEmbeddings, NetworkIndex
from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.catalogue import WINDOW_STEPS
from faultprint.traffic.rows import Rows, read_rows
from faultprint.traffic.simulator import NORMAL

RESULTS = ROOT / "benchmarks" / "results"
FOREIGN = Path(os.environ.get("FAULTPRINT_FOREIGN_TRAFFIC", ROOT.parent / "shared" / "foreign-traffic"))
DEPARTURE_MINUTES = 3


@dataclass
class NodeDiagnoses:
    """A node's diagnosis and departure from normal for each diagnosed minute."""

    network: str
    node: str
    diagnoses: list[MinuteDiagnosis]
    departures: np.ndarray  # (len(diagnoses), features) float32


@dataclass
class Corpus:
    """What the replay runs over: diagnosed minutes and the truth, of one source."""

    name: str
    nodes: list[NodeDiagnoses]
    truths: list[Truth]
    fault_free: set[tuple[str, str]]
    node_days: int


class Model:
    def __init__(self, artifact: Path) -> None:
        import tensorflow as tf

        from faultprint.encoder.artifact import load_tower, read_metadata

        metadata = read_metadata(artifact)
        tower = load_tower(artifact, metadata)
        self._graph = tf.function(lambda x: tower(x, training=False))
        self.threshold = metadata.distance_threshold

    def embed(self, windows: np.ndarray, baseline: NetworkBaseline) -> np.ndarray:
        out = [
            np.asarray(self._graph(baseline.normalise(windows[s : s + 512])))
            for s in range(0, len(windows), 512)
        ]
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def index_of(
    model: Model, baseline: NetworkBaseline, normal: np.ndarray, faults: dict[str, np.ndarray]
) -> NetworkIndex:
    cases = [CaseEmbeddings("normal", NORMAL, model.embed(normal, baseline))]
    cases += [
        CaseEmbeddings(f"case-{label}", label, model.embed(w[None], baseline)) for label, w in faults.items()
    ]
    return NetworkIndex(cases)


def diagnose_node(
    model: Model, baseline: NetworkBaseline, index: NetworkIndex, network: str, node: str,
    minutes: np.ndarray, rows: np.ndarray, before: Rows | None = None,
) -> NodeDiagnoses:  # fmt: skip
    """Every minute of a node that becomes its newest through the server's ring, model, match and
    departure; the rows before (its earlier minutes, which a server streaming it holds) fill the
    ring first."""
    ring = NodeWindows(WINDOW_STEPS, rows.shape[1])
    slot = ring.add((network, node))
    if before is not None:
        for minute, row in zip(before.minute.tolist(), before.values.astype(np.float32), strict=True):
            ring.put(slot, minute, row)
    at, windows, departures = [], [], []
    for minute, row in zip(minutes.tolist(), rows, strict=True):
        if ring.put(slot, minute, row) is not Arrival.NEWEST:
            continue  # as the monitor: a repeated or reordered minute is kept, not diagnosed
        window = ring.window(slot)
        if window is not None:
            at.append(minute)
            windows.append(window)
            recent = ring.newest_rows(slot, DEPARTURE_MINUTES, minute)
            departures.append(baseline.departure(recent))
    if not at:
        return NodeDiagnoses(network, node, [], np.zeros((0, rows.shape[1]), np.float32))
    embeddings = model.embed(np.stack(windows), baseline)
    matches = index.match_many(embeddings, [1] * len(at), model.threshold)
    diagnoses = [MinuteDiagnosis.of(m, x) for m, x in zip(at, matches, strict=True)]
    return NodeDiagnoses(network, node, diagnoses, np.stack(departures).astype(np.float32))


def _visible(node: NodeDiagnoses, truths: list[Truth]) -> None:
    """Marks the episodes whose most faulty window (ending at most 60 minutes into the fault)
    the node's own diagnosis names right, as the server diagnosed it."""
    labels = {d.minute: d.label for d in node.diagnoses}
    for t in truths:
        t.visible = not t.enrolled and labels.get(min(t.end - 1, t.start + WINDOW_STEPS - 1)) == t.label


def simulated_corpus(model: Model, options: FleetOptions) -> Corpus:
    nodes, truths, fault_free = [], [], set()
    for network in simulate_networks(options):
        days = [h.reshape(24, WINDOW_STEPS, -1) for h in network.history]
        baseline = NetworkBaseline.fit(np.concatenate(days), days[0])  # as the server: normal case + traffic
        index = index_of(model, baseline, days[0], network.faults)
        first = START + 1440
        for n in network.nodes:
            minutes = first + np.arange(len(n.values))
            nodes.append(diagnose_node(model, baseline, index, n.network, n.node, minutes, n.values))
            _visible(nodes[-1], n.truths)
            truths += n.truths
            if not n.truths:
                fault_free.add((n.network, n.node))
    return Corpus("simulated", nodes, truths, fault_free, len(fault_free) * options.days)


def foreign_corpus(model: Model) -> Corpus | None:
    from faultprint.traffic.windowing import WindowingOptions, cut_windows

    paths = sorted(FOREIGN.glob("*.parquet")) if FOREIGN.is_dir() else []
    if not paths:
        return None
    nodes, truths, days = [], [], 0
    for path in paths:
        rows = read_rows(path)
        first_day_end = int(rows.minute.min()) + 1440
        first = rows.select(rows.minute < first_day_end)
        cut = cut_windows(first, WindowingOptions(stride_minutes=60))
        baseline = NetworkBaseline.fit(cut.windows, cut.windows[cut.labels == NORMAL])
        everything = cut_windows(rows, WindowingOptions(stride_minutes=1))
        faults, enrolled_at = {}, {}
        for label in sorted(set(everything.labels) - {NORMAL, ""}):
            at = int(np.flatnonzero(everything.labels == label)[0])
            faults[label] = everything.windows[at]
            enrolled_at[label] = (str(everything.node[at]), int(everything.start_minute[at]))
        index = index_of(model, baseline, cut.windows[cut.labels == NORMAL], faults)
        later = rows.select(rows.minute >= first_day_end)
        last_hour = rows.select((rows.minute < first_day_end) & (rows.minute >= first_day_end - WINDOW_STEPS))
        for node in np.unique(later.node):
            mine = later.select(later.node == node)
            order = np.argsort(mine.minute)
            minutes, values, labels = (
                mine.minute[order],
                mine.values[order].astype(np.float32),
                mine.label[order],
            )
            network = str(mine.network[0])
            before = last_hour.select(last_hour.node == node)
            before = before.select(np.argsort(before.minute))
            nodes.append(diagnose_node(model, baseline, index, network, str(node), minutes, values, before))
            found = _label_runs(network, str(node), minutes, labels, values, enrolled_at)
            _visible(nodes[-1], found)
            truths += found
        days += len(np.unique(later.node)) * round((int(later.minute.max()) - first_day_end + 1) / 1440)
    return Corpus("foreign", nodes, truths, set(), days)


def _label_runs(network: str, node: str, minutes: np.ndarray, labels: np.ndarray, values: np.ndarray,
                enrolled_at: dict[str, tuple[str, int]], merge_gap: int = 10) -> list[Truth]:  # fmt: skip
    """Episodes: runs of one fault's label (gaps up to merge_gap minutes joined); the run a case
    was enrolled from (enrolled_at: label -> node and first minute of the enrolled window) is
    marked enrolled."""
    found: list[Truth] = []
    faulty = np.flatnonzero(labels != NORMAL)
    start = None
    for k, i in enumerate(faulty):
        if start is None:
            start = i
        nxt = faulty[k + 1] if k + 1 < len(faulty) else None
        if nxt is None or labels[nxt] != labels[i] or minutes[nxt] - minutes[i] > merge_gap:
            label = str(labels[i])
            first, last = int(minutes[start]), int(minutes[i])
            enrolled_node, enrolled_start = enrolled_at.get(label, ("", -1))
            enrolled = enrolled_node == node and first <= enrolled_start + WINDOW_STEPS <= last + WINDOW_STEPS
            peak_end = int(np.searchsorted(minutes, min(last, first + WINDOW_STEPS - 1), side="right"))
            peak = values[max(0, peak_end - WINDOW_STEPS) : peak_end]
            found.append(Truth(network, node, label, first, last + 1, peak, enrolled=enrolled))
            start = None
    return found


def replay(corpus: Corpus, options: LifeCycleOptions) -> list[Found]:
    found: list[Found] = []
    for n in corpus.nodes:
        life = NodeLifeCycle(options.of_last_minutes)
        opened: dict[int, tuple[str, int, int]] = {}
        for d, moved in zip(n.diagnoses, n.departures, strict=True):
            for t in life.observe(d, moved, options, "replay"):
                key = id(t.incident)
                if t.kind == "onset":
                    opened[key] = (t.incident.label, t.incident.start_minute, d.minute)
                else:
                    label, start, onset = opened.pop(key)
                    found.append(Found(n.network, n.node, label, start, t.end_minute, onset, d.minute))
        found += [
            Found(n.network, n.node, label, start, None, onset, None)
            for label, start, onset in opened.values()
        ]
    return found


# Each option moved on its own, either side of its default.
SWEEP: dict[str, tuple[Any, ...]] = {
    "raise_minutes": (4,),
    "raise_departure": (1.5, 3.0),
    "raise_statistics": (1, 3),
    "raise_departing_statistics": (0, 2),
    "raise_persistent_minutes": (0, 6, 10),
    "clear_departure": (0.8, 1.5),
    "clear_share_of_peak": (0.0, 0.3),
    "reraise_share_of_peak": (0.0, 0.7),
    "reraise_minutes": (1, 8),
    "signature_clear_minutes": (5,),
}


def sweep(values: dict[str, tuple[Any, ...]]) -> list[LifeCycleOptions]:
    """The defaults with one option moved, for every option and value (valid settings only)."""
    settings = []
    for name, moved in values.items():
        for value in moved:
            try:
                settings.append(replace(LifeCycleOptions(), **{name: value}))
            except ValueError:
                continue
    return settings


def main() -> None:
    import benchmarks.life_cycle_tuning as module  # the cache pickles this module's classes

    module.run()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--networks", type=int, default=3)
    parser.add_argument("--nodes-per-network", type=int, default=40)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--cache", default="/tmp/faultprint-life-cycle-corpus.pkl")
    parser.add_argument("--only-defaults", action="store_true", help="replay the defaults alone")
    args = parser.parse_args()
    cache = Path(args.cache)
    if cache.exists():
        corpora = pickle.loads(cache.read_bytes())
    else:
        model = Model(Path(args.artifact))
        options = FleetOptions(args.networks, args.nodes_per_network, args.days)
        corpora = [c for c in (simulated_corpus(model, options), foreign_corpus(model)) if c is not None]
        cache.write_bytes(pickle.dumps(corpora))
    settings = [LifeCycleOptions()] if args.only_defaults else [LifeCycleOptions(), *sweep(SWEEP)]
    rows = []
    for setting in settings:
        row = {"setting": {k: v for k, v in vars(setting).items()}}
        for corpus in corpora:
            row[corpus.name] = score(
                corpus.truths, corpus.fault_free, corpus.node_days, replay(corpus, setting)
            )
        rows.append(row)
        print(json.dumps(_brief(row)), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"defaults": rows[0], "rows": [_brief(r) for r in rows]}
    (RESULTS / "life-cycle-tuning.json").write_text(json.dumps(result, indent=0) + "\n")
    (RESULTS / "life-cycle-tuning.md").write_text(markdown(rows))


def _brief(row: dict) -> dict:  # type: ignore[type-arg]
    out = {"setting": row["setting"]}
    for name, s in row.items():
        if name != "setting":
            out[name] = {k: s[k] for k in ("visible", "visible_ok", "split", "missed", "late_onsets",
                                           "late_abatements", "early_abatements", "false_incidents",
                                           "false_incidents_on_fault_free_nodes")}  # fmt: skip
    return out


def markdown(rows: list[dict]) -> str:  # type: ignore[type-arg]
    """The defaults, then each setting of the sweep by the option it moves."""
    names = [k for k in rows[0] if k != "setting"]
    head = "| setting | " + " | ".join(
        f"{n}: right / visible, split, missed, late on / off, early off, false (on fault-free nodes)"
        for n in names
    )
    lines = ["# Incident settings replayed", "",
             "The defaults, then each option moved on its own (the others at their defaults).", "",
             head + " |", "|" + "---|" * (1 + len(names))]  # fmt: skip
    defaults = rows[0]["setting"]
    for row in rows:
        moved = [f"{k} = {v}" for k, v in row["setting"].items() if v != defaults[k]]
        cells = [", ".join(moved) if row is not rows[0] else "defaults"]
        for n in names:
            s = row[n]
            cells.append(f"{s['visible_ok']} / {s['visible']}, {s['split']}, {s['missed']}, "
                         f"{s['late_onsets']} / {s['late_abatements']}, {s['early_abatements']}, "
                         f"{s['false_incidents']} "
                         f"({s['false_incidents_on_fault_free_nodes']})")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
