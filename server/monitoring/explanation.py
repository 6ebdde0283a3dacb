"""Why a node's incident was raised: the statistics departing most from normal and from the matched case.

Departures are in units of each statistic's normal range on the network (traffic/baseline.py
NetworkBaseline.departure: the z the encoder reads, over the 99th percentile of |z| in the
network's normal minutes), so that a sparse count that swings in healthy traffic does not
outrank the statistic a fault moves. A node's departure is the mean over its newest
minutes; a reference case's profile is the mean over its example windows, computed once
per case, model version and baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from faultprint.server.model.host import ServingState
from faultprint.server.references.store import ReferenceStore
from faultprint.traffic.baseline import NetworkBaseline
from faultprint.traffic.catalogue import FAMILIES
from faultprint.v1 import incident_service_pb2

_FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}

# Statistics listed per explanation.
SHOWN = 5


def baseline_of(state: ServingState, network: str) -> NetworkBaseline | None:
    """The network's baseline under the serving version, if the model reads baselines."""
    entry = state.index.baselines.get(network)
    return None if entry is None else entry[0]


def departure(rows: np.ndarray, baseline: NetworkBaseline) -> np.ndarray | None:
    """Departure from normal per statistic over rows (minutes, features), in units of each
    statistic's normal range (NetworkBaseline.departure); None for no rows."""
    if len(rows) == 0:
        return None
    return baseline.departure(rows.astype(np.float32))


def departures(
    pairs: Iterable[Sequence[float]], feature_names: tuple[str, ...]
) -> list[incident_service_pb2.Departure]:
    """(column, departure) pairs as Departure messages, in their order."""
    return [
        incident_service_pb2.Departure(
            statistic=feature_names[int(c)],
            family=_FAMILY_OF.get(feature_names[int(c)], ""),
            departure=float(d),
        )
        for c, d in pairs
    ]


def families(shown: list[incident_service_pb2.Departure]) -> list[str]:
    """The families of departures, most departing first, each once."""
    return list(dict.fromkeys(d.family for d in shown if d.family))


class ReferenceProfiles:
    """Each reference case's mean departure from its network's normal, by version and baseline."""

    def __init__(self, store: ReferenceStore, max_cases: int = 4096) -> None:
        self._store = store
        self._max_cases = max_cases
        self._profiles: dict[tuple[str, str, str, int], np.ndarray | None] = {}

    async def profile(self, state: ServingState, network: str, case_id: str) -> np.ndarray | None:
        """The case's profile (features,), or None when it or the baseline is gone."""
        baseline = baseline_of(state, network)
        if baseline is None or not case_id:
            return None
        key = (state.version, network, case_id, id(baseline))
        if key not in self._profiles:
            if len(self._profiles) >= self._max_cases:
                self._profiles.clear()
            self._profiles[key] = await self._load(network, case_id, baseline)
        return self._profiles[key]

    async def _load(self, network: str, case_id: str, baseline: NetworkBaseline) -> np.ndarray | None:
        try:
            case = await self._store.get(network, case_id)
            windows = await self._store.get_windows(case)
        except Exception:  # a case deleted since: the explanation goes without it
            return None
        return baseline.departure(windows.astype(np.float32).reshape(-1, windows.shape[-1]))
