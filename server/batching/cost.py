"""The scheduler's running estimate of batch time, used to refuse requests that cannot make their deadline.

Kept apart from the queue rules so the estimate can be tested on its own: per padded
batch size, a moving average of measured compute time plus twice its moving mean
deviation (a batch slower than usual must still be covered), seeded by the warm-up
runs and extrapolated for sizes not yet measured.
"""

from __future__ import annotations

from collections.abc import Mapping

# Weight of the newest measurement in the moving average.
_SMOOTHING = 0.2
# Until batches under real load are measured, the deviation is assumed to be this fraction
# of the warm-up time: a quiet warm-up is faster than a batch computed beside live traffic.
_SEED_DEVIATION = 0.25


class BatchCostModel:
    """Seconds a batch of each padded size takes on one device, learned as batches run."""

    def __init__(self, batch_sizes: tuple[int, ...]) -> None:
        self._sizes = batch_sizes
        self._mean: dict[int, float] = {}
        self._deviation: dict[int, float] = {}
        self._seconds: dict[int, float] = {}

    def seed(self, seconds_by_size: Mapping[int, float]) -> None:
        """Starts the estimate from warm-up timings (a later measurement refines them)."""
        for size, seconds in seconds_by_size.items():
            if size in self._sizes and seconds > 0:
                self._mean[size] = seconds
                self._deviation[size] = seconds * _SEED_DEVIATION
                self._seconds[size] = seconds + 2 * self._deviation[size]

    def record(self, padded_size: int, seconds: float) -> None:
        mean = self._mean.get(padded_size)
        if mean is None:
            mean, deviation = seconds, 0.0
        else:
            deviation = self._deviation[padded_size]
            deviation += _SMOOTHING * (abs(seconds - mean) - deviation)
            mean += _SMOOTHING * (seconds - mean)
        self._mean[padded_size], self._deviation[padded_size] = mean, deviation
        self._seconds[padded_size] = mean + 2 * deviation

    @property
    def known(self) -> bool:
        return bool(self._seconds)

    def seconds(self, padded_size: int) -> float:
        """The estimate for one batch; sizes never measured scale from the nearest measured one.

        Scaling linearly from a smaller size overestimates (batching is sub-linear), and
        from a larger one it keeps the larger batch's cost, so the estimate errs towards
        refusing a request rather than computing it too late. Zero when nothing is known.
        """
        if padded_size in self._seconds:
            return self._seconds[padded_size]
        if not self._seconds:
            return 0.0
        larger = [s for s in self._seconds if s > padded_size]
        if larger:
            return self._seconds[min(larger)]
        nearest = max(self._seconds)
        return self._seconds[nearest] * padded_size / nearest
