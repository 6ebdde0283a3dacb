"""The in-memory nearest-neighbour index of each network's reference cases, for one model version.

Classification reads only this index, never Redis. Each network's index is an
immutable matrix of example embeddings, rebuilt on change (networks hold tens of
cases), so a reader always sees a consistent set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

NORMAL_LABEL = "normal"


@dataclass(frozen=True)
class CaseEmbeddings:
    """The embeddings of one reference case's example windows."""

    case_id: str
    label: str
    embeddings: np.ndarray  # (examples, embedding_size)


@dataclass(frozen=True)
class Neighbour:
    case_id: str
    label: str
    distance: float


@dataclass(frozen=True)
class Match:
    """The diagnosis of one embedding against a network's reference cases."""

    label: str
    verdict: str  # "normal", "fault" or "unknown"
    distance: float
    margin: float | None
    neighbours: tuple[Neighbour, ...]


class NetworkIndex:
    """All example embeddings of one network, with the case each row belongs to."""

    def __init__(self, cases: Iterable[CaseEmbeddings]) -> None:
        self.cases = tuple(sorted(cases, key=lambda c: c.case_id))
        if not self.cases:
            raise ValueError("a network index needs at least one reference case")
        self._matrix = np.concatenate([c.embeddings for c in self.cases]).astype(np.float32)
        self._row_case = np.repeat(np.arange(len(self.cases)), [len(c.embeddings) for c in self.cases])
        self._labels = np.array([c.label for c in self.cases])

    def match(self, embedding: np.ndarray, top_k: int, threshold: float) -> Match:
        """Nearest cases by the distance to their nearest example window."""
        row_distances = np.linalg.norm(self._matrix - embedding, axis=1)
        case_distances = np.full(len(self.cases), np.inf)
        np.minimum.at(case_distances, self._row_case, row_distances)
        order = np.argsort(case_distances, kind="stable")
        best = order[0]
        label = str(self._labels[best])
        distance = float(case_distances[best])
        others = case_distances[self._labels != label]
        margin = float(others.min() - distance) if others.size else None
        if distance > threshold:
            verdict = "unknown"
        else:
            verdict = "normal" if label == NORMAL_LABEL else "fault"
        neighbours = tuple(
            Neighbour(self.cases[i].case_id, self.cases[i].label, float(case_distances[i]))
            for i in order[:top_k]
        )
        return Match(label, verdict, distance, margin, neighbours)


class ReferenceIndex:
    """Per-network indexes for one model version; mutated only on the event loop."""

    def __init__(self, version: str) -> None:
        self.version = version
        self._cases: dict[str, dict[str, CaseEmbeddings]] = {}
        self._networks: dict[str, NetworkIndex] = {}

    def networks(self) -> list[str]:
        return sorted(self._networks)

    def get(self, network: str) -> NetworkIndex | None:
        return self._networks.get(network)

    def put(self, network: str, case: CaseEmbeddings) -> None:
        cases = dict(self._cases.get(network, {}))
        cases[case.case_id] = case
        self._cases[network] = cases
        self._networks[network] = NetworkIndex(cases.values())

    def remove(self, network: str, case_id: str) -> None:
        cases = dict(self._cases.get(network, {}))
        if cases.pop(case_id, None) is None:
            return
        if cases:
            self._cases[network] = cases
            self._networks[network] = NetworkIndex(cases.values())
        else:
            self._cases.pop(network, None)
            self._networks.pop(network, None)
