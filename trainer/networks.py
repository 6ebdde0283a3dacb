"""Windows of whole networks for training and evaluation: labelled row files, and many simulated
networks drawn at random, each read relative to the baseline learned from its own first day, as
a network the model has never seen will be.

Each network gets a random profile (size, mix, time zone, timers, vendor code choices, fault
intensity; traffic/simulator.py ``random_profile``), random probe damage, and nodes whose
per-minute rows are cut into windows exactly as an operator's exports are
(traffic/windowing.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.rows import Rows, read_rows
from faultprint.traffic.simulator import ProbeDamage, random_profile, simulate_node_rows
from faultprint.traffic.windowing import WindowingOptions, WindowSet, cut_windows

log = logging.getLogger(__name__)

# The UTC minute simulated networks start at (2025-02-19T21:20Z); any would do.
SIMULATION_START_MINUTE = 29_000_000
# What a first day is, in minutes from a network's first row: its baseline comes from it.
FIRST_DAY_MINUTES = 1440


def random_damage(rng: np.random.Generator) -> ProbeDamage:
    """Probe damage drawn at random, from clean exports to visibly damaged ones."""
    return ProbeDamage(
        missing_minute_rate=float(rng.uniform(0.0, 0.03)),
        missing_value_rate=float(rng.uniform(0.0, 0.003)),
        counter_noise=float(rng.uniform(0.005, 0.03)),
        counter_reset_rate=float(rng.uniform(0.0, 0.002)),
        # Up to 1.4 outages a node-day, 0.7 on average.
        outage_rate=float(rng.uniform(0.0, 0.001)),
    )


def simulate_random_networks(
    count: int, nodes: int, days: int, faults_per_day: float, conditions: tuple[str, ...], seed: int,
    prefix: str = "sim", windowing: WindowingOptions | None = None,
) -> WindowSet:  # fmt: skip
    """Windows of count random networks (named prefix-0, prefix-1, ...), nodes x days each, cut
    with the windowing options given.

    Each network's fault rate is drawn within +-30 % of faults_per_day.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(count):
        profile = random_profile(f"{prefix}-{i}", rng)
        damage = random_damage(rng)
        rate = float(faults_per_day * rng.uniform(0.7, 1.3))
        parts += [simulate_node_rows(profile, f"pcscf-{n}", SIMULATION_START_MINUTE, days * 1440,
                                     int(rng.integers(1 << 31)), rate, damage, conditions)
                  for n in range(nodes)]  # fmt: skip
    cut = cut_windows(Rows.concat(parts), windowing or WindowingOptions())
    log.info("simulated %d random networks: %s", count, cut.report.summary())
    return cut


def normalise_by_first_day(cut: WindowSet, first_day_minutes: int = FIRST_DAY_MINUTES) -> np.ndarray:
    """Every window normalised by its network's baseline, learned from that network's first-day
    windows, labels unread, as the protocol learns it (and a server from the network's normal
    cases and unlabelled traffic)."""
    out = np.empty(cut.windows.shape, dtype=np.float32)
    steps = cut.windows.shape[1]
    for network in np.unique(cut.network):
        mine = cut.network == network
        day_one_ends = cut.start_minute[mine].min() + first_day_minutes
        first_day = mine & (cut.start_minute + steps <= day_one_ends)
        source = cut.windows[first_day] if first_day.any() else cut.windows[mine]
        out[mine] = NetworkBaseline.fit(source).normalise(cut.windows[mine])
    return out


# Random networks the trainer evaluates on after training: never trained on (another seed and
# names), 8 nodes and 4 days each, as the transfer protocol's foreign networks are.
EVALUATION_NETWORKS = 4
EVALUATION_NODES = 8
EVALUATION_DAYS = 4


def evaluation_networks(faults_per_day: float, conditions: tuple[str, ...], seed: int) -> WindowSet:
    """Windows of EVALUATION_NETWORKS random networks that no training run with seed trains on."""
    return simulate_random_networks(EVALUATION_NETWORKS, EVALUATION_NODES, EVALUATION_DAYS, faults_per_day,
                                    conditions, seed + 1_000_003, prefix="unseen")  # fmt: skip


def labelled_windows(
    paths: Sequence[Path], conditions: tuple[str, ...], network: str | None = None,
    windowing: WindowingOptions | None = None,
) -> WindowSet:  # fmt: skip
    """Labelled windows of row files, with their origin (of one network only, if given), cut with
    the windowing options given and keeping the conditions given; the repairs and the data
    contract's findings are logged. ValueError when the files hold no labels or no usable
    window."""
    parts = [read_rows(p) for p in paths]
    unlabelled = [p for r, p in zip(parts, paths, strict=True) if r.label is None]
    if unlabelled:
        shown = ", ".join(map(str, unlabelled))
        raise ValueError(f"{shown}: no label column; training and evaluation need labels")
    merged = Rows.merge(parts)
    if network is not None:
        merged = merged.select(merged.network == network)
        if not len(merged):
            raise ValueError(f"no rows of network {network!r} in {', '.join(map(str, paths))}")
    cut = cut_windows(merged, windowing or WindowingOptions())
    labels, report = cut.labels, cut.report
    log.info("windowing: %s", report.summary())
    # Out-of-contract values mean an exporter that fills a column differently: said loudly.
    level = logging.WARNING if report.out_of_contract else logging.INFO
    log.log(level, "data contract (docs/data-contract.md): %s", report.contract_summary())
    if not len(labels) and report.dropped_out_of_contract:
        raise ValueError(f"{', '.join(map(str, paths))}: no usable window; {report.contract_summary()}")
    known = np.isin(labels, conditions)
    if not known.all():
        log.info("skipping %d windows whose labels the config does not train on: %s",
                 (~known).sum(), sorted(map(str, set(labels[~known]))))  # fmt: skip
    return cut.select(known)
