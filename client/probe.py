"""Probe-agent simulator: N agents stream their nodes' windows, with faults injected, and tally the answers.

Each agent keeps one bidirectional stream open, as a deployed probe agent would, and
sends windows simulated for its node. The true condition of every window is known,
so the run ends with a confusion table of true against diagnosed condition.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from faultprint.client.client import AsyncFaultprintClient, StreamItem
from faultprint.client.throttle import ThrottleOptions
from faultprint.traffic.simulator import CONDITIONS, NORMAL, PROFILES, random_window
from faultprint.v1 import diagnosis_pb2

UNKNOWN = "unknown"
ERROR = "error"


@dataclass(frozen=True)
class ProbeOptions:
    """What the simulated probes send."""

    # gRPC target of the server.
    target: str
    # Network the probes' nodes belong to (a simulator profile name).
    network: str
    # Simulated probe agents, one node and one stream each.
    agents: int = 4
    # Windows each agent sends.
    windows_per_agent: int = 10
    # Conditions to inject; each window draws one.
    conditions: tuple[str, ...] = CONDITIONS
    # Share of windows that are normal traffic; the rest are split across the faults.
    normal_share: float = 0.4
    seed: int = 1
    # Print one line per diagnosis.
    verbose: bool = True


@dataclass
class Tally:
    """True against diagnosed conditions."""

    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, truth: str, diagnosed: str) -> None:
        self.pairs[(truth, diagnosed)] += 1

    @property
    def total(self) -> int:
        return sum(self.pairs.values())

    @property
    def accuracy(self) -> float:
        right = sum(n for (t, d), n in self.pairs.items() if t == d)
        return right / self.total if self.total else 0.0

    def table(self) -> str:
        truths = sorted({t for t, _ in self.pairs})
        columns = truths + sorted({d for _, d in self.pairs} - set(truths))
        width = max(len(c) for c in [*columns, "true \\ diagnosed"]) + 2
        lines = ["true \\ diagnosed".ljust(width) + "".join(c.rjust(width) for c in columns)]
        for t in truths:
            lines.append(t.ljust(width) + "".join(str(self.pairs[(t, c)]).rjust(width) for c in columns))
        lines.append(f"accuracy: {self.accuracy:.3f} over {self.total} windows")
        return "\n".join(lines)


def draw_conditions(options: ProbeOptions, rng: np.random.Generator, count: int) -> list[str]:
    faults = [c for c in options.conditions if c != NORMAL]
    if NORMAL not in options.conditions:
        return list(rng.choice(faults, size=count))
    if not faults:
        return [NORMAL] * count
    fault_share = (1 - options.normal_share) / len(faults)
    return list(
        rng.choice([NORMAL, *faults], size=count, p=[options.normal_share, *[fault_share] * len(faults)])
    )


async def run_agent(options: ProbeOptions, agent: int, tally: Tally) -> None:
    rng = np.random.default_rng(options.seed * 1000 + agent)
    profile = PROFILES[options.network]
    node = f"pcscf-{agent:03d}"
    truths = draw_conditions(options, rng, options.windows_per_agent)

    async def items() -> AsyncIterator[StreamItem]:
        for seq, condition in enumerate(truths):
            window = random_window(profile, condition, rng)
            yield StreamItem(options.network, node, window, sequence=seq)

    # Probe agents back off by themselves while the server sheds load (client/throttle.py).
    async with AsyncFaultprintClient(options.target, throttle=ThrottleOptions()) as client:
        async for response in client.classify_stream(items()):
            truth = truths[response.sequence]
            if response.HasField("error"):
                diagnosed = ERROR
                line = f"error {response.error.code}: {response.error.message}"
            else:
                d = response.diagnosis
                unknown = d.verdict == diagnosis_pb2.VERDICT_UNKNOWN
                diagnosed = UNKNOWN if unknown else d.label
                line = f"{diagnosis_pb2.Verdict.Name(d.verdict):15} {d.label:18} distance {d.distance:.3f}"
            tally.add(truth, diagnosed)
            if options.verbose:
                mark = "ok " if truth == diagnosed else "MISS"
                print(f"{mark} {node} #{response.sequence:<3} true {truth:18} -> {line}", flush=True)


async def run_probes(options: ProbeOptions) -> Tally:
    tally = Tally()
    await asyncio.gather(*(run_agent(options, a, tally) for a in range(options.agents)))
    return tally


def enrol_one_per_condition(
    target: str, network: str, conditions: Sequence[str], seed: int, windows_per_case: int = 1,
    normal_windows: int | None = None,
) -> list[str]:  # fmt: skip
    """Enrols windows_per_case simulated windows of each condition as that condition's reference
    case (normal_windows, if given, for normal: the network's baseline is learned from them).
    Normal goes first: a model that reads network baselines needs it before any fault."""
    from faultprint.client.client import FaultprintClient

    rng = np.random.default_rng(seed)
    profile = PROFILES[network]
    ids = []
    with FaultprintClient(target) as client:
        for condition in sorted(conditions, key=lambda c: c != NORMAL):
            count = normal_windows if condition == NORMAL and normal_windows else windows_per_case
            windows = [random_window(profile, condition, rng) for _ in range(count)]
            case = client.create_reference_case(
                network, condition, windows, description=f"simulated {condition} on {network}"
            )
            ids.append(case.reference_case_id)
    return ids
