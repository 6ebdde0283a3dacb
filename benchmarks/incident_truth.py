"""Simulated fleets with injected faults, their truth, and how found incidents score against it.

Shared by the end-to-end incident scenario (benchmarks/incident_scenario.py) and the
life-cycle replay that measures the incident settings (benchmarks/life_cycle_tuning.py),
so that both count the same way:

- an episode's truth runs from its first to its last minute labelled with the fault (a
  fault too faint to label has no truth);
- an episode is *visible* when the one-shot diagnosis of its most faulty window (its
  first 60 faulty minutes) names its fault;
- a visible episode is right when exactly one incident overlaps it (within TOLERANCE
  minutes), its ONSET decided within TOLERANCE minutes of the episode's first minute and
  its ABATED within TOLERANCE minutes of its last, on either side (an incident cleared
  while its fault goes on tells a policy engine the node has healed when it has not);
- an incident overlapping no episode is false; on fault-free nodes they are counted per
  node-day;
- the episode a reference case was enrolled from (the foreign replay enrols a fault the
  first day lacks from its first episode, on one node) is not scored, and an incident
  overlapping it is not false.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from faultprint.traffic.catalogue import WINDOW_STEPS
from faultprint.traffic.simulator import (
    CONDITIONS,
    NORMAL,
    Episode,
    NetworkProfile,
    plan_episodes,
    random_profile,
    simulate_timeline,
)

START = 29_500_000  # the history day's first UTC minute; streamed days follow it
FAULTS = tuple(c for c in CONDITIONS if c != NORMAL)
# Minutes around an episode within which an incident belongs to it, and the bar on delays.
TOLERANCE = 10


@dataclass
class Truth:
    network: str
    node: str
    label: str
    start: int  # first minute labelled with the fault
    end: int  # the minute after the last labelled one
    peak: np.ndarray  # its most faulty window (shorter when the node's minutes begin within it)
    visible: bool = False
    # A reference case was enrolled from this episode: not scored, and its incidents not false.
    enrolled: bool = False


@dataclass
class Node:
    network: str
    node: str
    values: np.ndarray  # (minutes, features) float32, from the first streamed minute
    labels: np.ndarray
    truths: list[Truth]


@dataclass
class Network:
    profile: NetworkProfile
    # A history day of normal traffic on 8 nodes: the first is the normal case, the others
    # the unlabelled traffic its baseline is learned from.
    history: list[np.ndarray]
    # One window of each fault, from a reference node: the one-shot enrolment.
    faults: dict[str, np.ndarray]
    nodes: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class FleetOptions:
    networks: int = 5
    nodes_per_network: int = 100
    days: int = 3
    # Share of nodes with faults, and faults a day on such a node.
    faulty_share: float = 0.6
    faults_per_day: float = 2.0
    seed: int = 5_000_011


def simulate_networks(options: FleetOptions) -> Iterator[Network]:
    """Networks never trained on (random profiles, seeds apart from training's), one at a time."""
    rng = np.random.default_rng(options.seed)
    minutes = options.days * 1440
    for n in range(options.networks):
        profile = random_profile(f"scenario-{n}", rng)
        network = Network(profile, *_enrolment(profile, rng))
        for i in range(options.nodes_per_network):
            episodes = []
            if rng.random() < options.faulty_share:
                planned = plan_episodes(minutes, options.faults_per_day, rng, FAULTS)
                episodes = [e for e in planned if e.onset >= 90 and e.onset + e.duration < minutes - 120]
            values, labels = simulate_timeline(profile, START + 1440, minutes, episodes, rng)
            values = values.astype(np.float32)
            node = f"pcscf-{i}"
            network.nodes.append(Node(profile.name, node, values, labels,
                                      _truths(profile.name, node, episodes, labels, values)))  # fmt: skip
        yield network


def _enrolment(
    profile: NetworkProfile, rng: np.random.Generator
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    history = [simulate_timeline(profile, START, 1440, [], rng)[0].astype(np.float32) for _ in range(8)]
    episodes = [Episode(fault, 120 + 240 * k, 90) for k, fault in enumerate(FAULTS)]
    span = 240 * len(FAULTS) + 120
    values, _ = simulate_timeline(profile, START - span - 120, span, episodes, rng)
    return history, {
        e.condition: values[e.onset : e.onset + WINDOW_STEPS].astype(np.float32) for e in episodes
    }


def _truths(
    network: str, node: str, episodes: list[Episode], labels: np.ndarray, values: np.ndarray
) -> list[Truth]:
    found = []
    for e in episodes:
        span = np.flatnonzero(labels[e.onset : e.onset + e.duration] == e.condition) + e.onset
        if len(span) == 0:
            continue  # too faint to show: no truth to find
        first, last = int(span[0]), int(span[-1])
        peak_end = min(last, first + WINDOW_STEPS - 1) + 1
        peak = values[max(0, peak_end - WINDOW_STEPS) : peak_end]
        found.append(Truth(network, node, e.condition, START + 1440 + first, START + 1440 + last + 1, peak))
    return found


@dataclass(frozen=True)
class Found:
    """One incident as a policy engine saw it."""

    network: str
    node: str
    label: str
    start: int  # its start_time, in minutes
    end: int | None  # its end_time; None if never abated
    onset_minute: int | None  # the traffic minute whose diagnosis raised it
    abated_minute: int | None  # ... and cleared it


def score(truths: list[Truth], fault_free: set[tuple[str, str]], node_days: int, found: list[Found],
          duplicated_events: int = 0) -> dict[str, object]:  # fmt: skip
    by_node: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, f in enumerate(found):
        by_node[(f.network, f.node)].append(i)
    matched: set[int] = set()
    rows, onset_delay, abate_delay = [], [], []
    for t in truths:
        mine = [i for i in by_node[(t.network, t.node)] if _overlaps(found[i], t)]
        matched.update(mine)
        if not t.visible or t.enrolled:
            continue
        one = found[mine[0]] if len(mine) == 1 else None
        onset = one.onset_minute - t.start if one and one.onset_minute is not None else None
        abated = one.abated_minute - t.end if one and one.abated_minute is not None else None
        ok = onset is not None and abated is not None and abs(onset) <= TOLERANCE and abs(abated) <= TOLERANCE
        onset_delay += [onset] if onset is not None else []
        abate_delay += [abated] if abated is not None else []
        rows.append({"label": t.label, "incidents": len(mine), "ok": ok,
                     "label_right": one is not None and one.label == t.label})  # fmt: skip
    false = [f for i, f in enumerate(found) if i not in matched]
    on_fault_free = [f for f in false if (f.network, f.node) in fault_free]
    per_label = Counter(r["label"] for r in rows)
    ok_per_label = Counter(r["label"] for r in rows if r["ok"])
    return {
        "episodes": sum(not t.enrolled for t in truths), "enrolled_episodes": sum(t.enrolled for t in truths),
        "visible": len(rows), "visible_ok": sum(r["ok"] for r in rows),
        "visible_one_incident": sum(r["incidents"] == 1 for r in rows),
        "visible_label_right": sum(r["label_right"] for r in rows),
        "missed": sum(r["incidents"] == 0 for r in rows), "split": sum(r["incidents"] > 1 for r in rows),
        "onset_delay_minutes": _quantiles(onset_delay), "abate_delay_minutes": _quantiles(abate_delay),
        "late_onsets": sum(d > TOLERANCE for d in onset_delay),
        "late_abatements": sum(d > TOLERANCE for d in abate_delay),
        "early_onsets": sum(d < -TOLERANCE for d in onset_delay),
        "early_abatements": sum(d < -TOLERANCE for d in abate_delay),
        "incidents": len(found), "false_incidents": len(false),
        "false_incidents_on_fault_free_nodes": len(on_fault_free), "fault_free_node_days": node_days,
        "false_incidents_per_fault_free_node_day": len(on_fault_free) / max(node_days, 1),
        "false_labels": dict(Counter(f.label for f in false)),
        "never_abated": sum(f.abated_minute is None for f in found),
        "duplicated_events": duplicated_events,
        "ok_by_label": {k: f"{ok_per_label[k]}/{per_label[k]}" for k in sorted(per_label)},
    }  # fmt: skip


def _overlaps(found: Found, t: Truth) -> bool:
    end = found.end if found.end is not None else 1 << 40
    return found.start <= t.end + TOLERANCE and end >= t.start - TOLERANCE


def _quantiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    q = np.percentile(values, [0, 50, 90, 100])
    return {"min": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "max": float(q[3])}
