"""A network's baseline: what each statistic looks like on that network when it is healthy, so
that a window is read relative to its own network rather than to the networks a model trained on.

Networks differ in size (counts span orders of magnitude), mix, timers and vendor code
choices; a fault is what departs from a network's own normal. The baseline holds, per
statistic, the median and the interquartile range of the signed log1p of every minute of
the windows it was learned from. Both are robust: the windows may be an operator's
marked-normal hours or unlabelled live traffic, in which faults take under a quarter of
the minutes and move neither figure far.

A window is then normalised as z = (sign(x) log1p(|x|) - median) / max(IQR, SCALE_FLOOR),
clipped to +-Z_LIMIT: a statistic that never moves on a healthy network (a code its vendor
never answers) reads as a large z the moment it appears, without overflowing.

The baseline also keeps each statistic's normal range (`band`): the 99th percentile of |z|
over minutes known to be normal (a network's normal reference cases; the 99th percentile is
not robust to the faults of unlabelled traffic), at least 1. A sparse count (a handful of 503s an
hour) swings by several IQRs in healthy traffic; departure / band says how far a node is
from its network's normal in units of how far normal itself goes, which is what an
incident's signature and explanation rank statistics by (server/monitoring/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Smallest scale, in signed-log1p units (about +-10 % of a count): a statistic that is
# constant on a healthy network does not turn rounding noise into a fault.
SCALE_FLOOR = 0.1
# Largest |z| a normalised value takes: a code that appears from nothing reads as about 46
# (log1p of 100 per minute over the floor), a 10^4 x surge as 92 before clipping.
Z_LIMIT = 50.0
# Fewest minutes a baseline may be learned from (an hour of one node).
MIN_BASELINE_MINUTES = 60


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|), elementwise."""
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass(frozen=True)
class NetworkBaseline:
    """Per statistic: centre (median) and scale (floored interquartile range), signed-log1p units."""

    centre: np.ndarray  # (features,) float32
    scale: np.ndarray  # (features,) float32
    # Minutes the baseline was learned from.
    minutes: int
    # Per statistic, the 99th percentile of |z| over minutes known to be normal, at least 1
    # (None: unknown, read as 1).
    band: np.ndarray | None = None

    @classmethod
    def fit(cls, windows: np.ndarray, normal: np.ndarray | None = None) -> NetworkBaseline:
        """Learns the baseline from windows (n, steps, features) of one network; its normal range
        from `normal` windows (known normal) if given, else from all of them."""
        minutes = windows.reshape(-1, windows.shape[-1])
        if len(minutes) < MIN_BASELINE_MINUTES:
            raise ValueError(f"a baseline needs at least {MIN_BASELINE_MINUTES} minutes, got {len(minutes)}")
        logged = signed_log1p(minutes.astype(np.float64))
        low, centre, high = np.percentile(logged, (25, 50, 75), axis=0)
        scale = np.maximum(high - low, SCALE_FLOOR)
        if normal is not None:
            logged = signed_log1p(normal.reshape(-1, normal.shape[-1]).astype(np.float64))
        z = np.clip((logged - centre) / scale, -Z_LIMIT, Z_LIMIT)
        band = np.maximum(np.percentile(np.abs(z), 99, axis=0), 1.0)
        return cls(centre.astype(np.float32), scale.astype(np.float32), len(minutes), band.astype(np.float32))

    def normalise(self, windows: np.ndarray) -> np.ndarray:
        """Windows (..., features) as float32 z-values relative to this network's normal."""
        return normalise(windows, self.centre, self.scale)

    def departure(self, rows: np.ndarray) -> np.ndarray:
        """How far rows (minutes, features) sit from normal, per statistic: the mean of their z
        over the minutes (lost values skipped) divided by the statistic's normal range."""
        mean = np.nanmean(self.normalise(rows), axis=0)
        return mean if self.band is None else mean / self.band

    def to_bytes(self) -> bytes:
        """centre then scale, packed little-endian float32 (what the model reads, and what the
        store keys embeddings by; the band is kept beside it)."""
        return np.concatenate([self.centre, self.scale]).astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes, minutes: int) -> NetworkBaseline:
        packed = np.frombuffer(raw, dtype="<f4")
        if packed.size % 2 or not np.isfinite(packed).all():
            raise ValueError(f"a packed baseline holds two finite vectors; got {packed.size} values")
        centre, scale = np.split(packed.astype(np.float32), 2)
        if (scale < SCALE_FLOOR * 0.999).any():
            raise ValueError("a packed baseline's scale is below its floor")
        return cls(centre, scale, minutes)


def normalise(
    windows: np.ndarray, centre: np.ndarray, scale: np.ndarray, in_place: bool = False
) -> np.ndarray:
    """z = (signed_log1p(windows) - centre) / scale, clipped to +-Z_LIMIT, as float32.

    centre and scale broadcast against windows: (features,) for one network, or
    (n, 1, features) for a batch whose windows come from several networks. in_place writes
    the result over windows (float32), with one scratch array and no other temporaries: 17-22 us
    a window on one core of a 2-core AMD EPYC, batch 1 to 256 (benchmarks/baseline_cost.py).
    """
    out = windows if in_place else np.array(windows, dtype=np.float32)
    magnitude = np.log1p(np.abs(out))
    np.copysign(magnitude, out, out=out)
    out -= centre
    out /= scale
    return np.clip(out, -Z_LIMIT, Z_LIMIT, out=out)
