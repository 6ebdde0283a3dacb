"""The in-memory nearest-neighbour index of each network's reference cases, for one model version.

Classification reads only this index, never Redis. Each network's index is an
immutable matrix of example embeddings, rebuilt on change, so a reader always sees a
consistent set. A whole network is indexed in one pass (put_many) at start-up, on a
reconnect and on a model swap; a single enrolment rebuilds its network's matrix, which
takes milliseconds up to thousands of cases (benchmarks/index_build.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from faultprint.traffic.baseline import NetworkBaseline

NORMAL_LABEL = "normal"


@dataclass(frozen=True)
class CaseEmbeddings:
    """The embeddings of one reference case's example windows."""

    case_id: str
    label: str
    embeddings: np.ndarray  # (examples, embedding_size)


# Named tuples: one Match and a few Neighbours are built per classified window, and a
# tuple is built several times faster than a frozen dataclass.
class Neighbour(NamedTuple):
    case_id: str
    label: str
    distance: float


class Match(NamedTuple):
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
        # Distances come from |a|^2 + |b|^2 - 2ab in float64: one matrix product per batch
        # whatever the network's size, exact to about 1e-7 for the same vector.
        matrix = np.concatenate([c.embeddings for c in self.cases]).astype(np.float64)
        self._matrix_t = np.ascontiguousarray(matrix.T)
        self._squared_norms = np.einsum("rd,rd->r", matrix, matrix)
        # Index of each case's first row: rows are grouped by case, in case order.
        self._case_starts = np.cumsum([0] + [len(c.embeddings) for c in self.cases[:-1]])
        self._one_row_per_case = len(matrix) == len(self.cases)
        # Each case's label as a small integer, for comparing labels across a whole batch.
        self._label_codes = np.unique([c.label for c in self.cases], return_inverse=True)[1]
        # Each case's id and label, as a neighbour names them.
        self._neighbours = [(c.case_id, c.label) for c in self.cases]

    def match(self, embedding: np.ndarray, top_k: int, threshold: float) -> Match:
        """The diagnosis of one embedding; see match_many."""
        return self.match_many(embedding[None, :], [top_k], threshold)[0]

    def match_many(self, embeddings: np.ndarray, top_ks: Sequence[int], threshold: float) -> list[Match]:
        """Nearest cases of each embedding (n, size), by the distance to a case's nearest example.

        One set of array operations for the whole batch; only the few neighbours
        returned per request are turned into Python objects.
        """
        queries = embeddings.astype(np.float64)
        row_distances = queries @ self._matrix_t
        row_distances *= -2.0
        row_distances += (queries * queries).sum(axis=1, keepdims=True)
        row_distances += self._squared_norms
        np.sqrt(np.maximum(row_distances, 0.0, out=row_distances), out=row_distances)
        if self._one_row_per_case:
            case_distances = row_distances
        else:
            case_distances = np.minimum.reduceat(row_distances, self._case_starts, axis=1)
        rows = np.arange(len(embeddings))
        best = case_distances.argmin(axis=1)  # the first of equals: the lowest case id
        best_distances = case_distances[rows, best]
        same_label = self._label_codes[None, :] == self._label_codes[best][:, None]
        margins = np.where(same_label, np.inf, case_distances).min(axis=1) - best_distances
        nearest_order = _nearest(case_distances, max(top_ks, default=0))
        # Whole arrays become Python lists once; the loop below only picks from them.
        nearest_distances = np.take_along_axis(case_distances, nearest_order, axis=1).tolist()
        cases, nearest = self._neighbours, nearest_order.tolist()
        matches = []
        for i, (top_k, case, distance, margin) in enumerate(
            zip(top_ks, best.tolist(), best_distances.tolist(), margins.tolist(), strict=True)
        ):
            label = self.cases[case].label
            if distance > threshold:
                verdict = "unknown"
            else:
                verdict = "normal" if label == NORMAL_LABEL else "fault"
            neighbours = tuple(
                Neighbour(cases[j][0], cases[j][1], d)
                for j, d in zip(nearest[i][:top_k], nearest_distances[i], strict=False)
            )
            matches.append(
                Match(label, verdict, distance, margin if math.isfinite(margin) else None, neighbours)
            )
        return matches


# Cases up to which the nearest are found by one full sort per row (see _nearest).
_FULL_SORT_MAX_CASES = 256


def _nearest(distances: np.ndarray, k: int) -> np.ndarray:
    """Column indexes of each row's k smallest distances, nearest first (ties by column).

    Up to _FULL_SORT_MAX_CASES cases a stable sort of each row is the fewest calls; beyond,
    a partial partition, then a sort of only those k: a full sort of every row costs
    milliseconds per batch once a network holds thousands of cases.
    """
    k = min(k, distances.shape[1])
    if distances.shape[1] <= _FULL_SORT_MAX_CASES:
        return np.argsort(distances, axis=1, kind="stable")[:, :k]
    chosen = np.argpartition(distances, k - 1, axis=1)[:, :k]
    chosen_distances = np.take_along_axis(distances, chosen, axis=1)
    order = np.lexsort((chosen, chosen_distances), axis=1)
    return np.take_along_axis(chosen, order, axis=1)


class ReferenceIndex:
    """Per-network indexes for one model version; mutated only on the event loop."""

    def __init__(self, version: str) -> None:
        self.version = version
        self._cases: dict[str, dict[str, CaseEmbeddings]] = {}
        self._networks: dict[str, NetworkIndex] = {}
        # For a model that reads network baselines: each indexed network's baseline and the
        # embedding space its cases were embedded in, and the networks that have cases but no
        # baseline yet (no case labelled normal), which cannot be matched.
        self.baselines: dict[str, tuple[NetworkBaseline, str]] = {}
        self.without_baseline: set[str] = set()

    def networks(self) -> list[str]:
        return sorted(self._networks)

    def get(self, network: str) -> NetworkIndex | None:
        return self._networks.get(network)

    def case_count(self, network: str) -> int:
        return len(self._cases.get(network, {}))

    def has(self, network: str, case_id: str) -> bool:
        return case_id in self._cases.get(network, {})

    def put(self, network: str, case: CaseEmbeddings) -> None:
        self.put_many(network, [case])

    def put_many(self, network: str, cases: Iterable[CaseEmbeddings]) -> None:
        """Adds (or replaces) cases of one network, rebuilding its matrix once."""
        merged = dict(self._cases.get(network, {}))
        merged.update((case.case_id, case) for case in cases)
        if not merged:
            return
        self._cases[network] = merged
        self._networks[network] = NetworkIndex(merged.values())

    def label_of(self, network: str, case_id: str) -> str | None:
        case = self._cases.get(network, {}).get(case_id)
        return None if case is None else case.label

    def drop_network(self, network: str) -> None:
        """Forgets every case of a network, and its baseline."""
        self._cases.pop(network, None)
        self._networks.pop(network, None)
        self.baselines.pop(network, None)
        self.without_baseline.discard(network)

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
