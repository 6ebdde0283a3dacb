"""A network's baseline: robust to the faults in unlabelled traffic, floored, and stored losslessly."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.traffic.baseline import SCALE_FLOOR, Z_LIMIT, NetworkBaseline, signed_log1p


def _traffic(rng: np.random.Generator, windows: int, level: float) -> np.ndarray:
    return rng.poisson(level, (windows, 60, 3)).astype(np.float32)


def test_a_baseline_is_the_median_and_floored_iqr_of_every_minute_in_signed_log1p() -> None:
    rng = np.random.default_rng(1)
    windows = _traffic(rng, 10, 400.0)
    windows[..., 2] = 0.0  # a code this network never answers
    baseline = NetworkBaseline.fit(windows)
    logged = signed_log1p(windows.reshape(-1, 3).astype(np.float64))
    assert np.allclose(baseline.centre, np.median(logged, axis=0), atol=1e-6)
    low, high = np.percentile(logged, (25, 75), axis=0)
    assert np.allclose(baseline.scale[:2], np.maximum(high - low, SCALE_FLOOR)[:2], atol=1e-6)
    assert baseline.scale[2] == pytest.approx(SCALE_FLOOR)
    assert baseline.minutes == 600


def test_faults_in_a_fifth_of_unlabelled_traffic_barely_move_the_baseline() -> None:
    rng = np.random.default_rng(2)
    clean = _traffic(rng, 40, 400.0)
    dirty = clean.copy()
    dirty[:8] *= 30.0  # a registration storm in a fifth of the windows
    a, b = NetworkBaseline.fit(clean), NetworkBaseline.fit(dirty)
    assert np.abs(a.centre - b.centre).max() < 0.5 * a.scale.min()
    # The mean would have moved by log(30) x 0.2, about 0.7, far more than the spread.
    assert np.log(30) * 0.2 > 5 * np.abs(a.centre - b.centre).max()


def test_normalised_windows_are_z_values_relative_to_the_network_and_clipped() -> None:
    rng = np.random.default_rng(3)
    windows = _traffic(rng, 10, 400.0)
    windows[..., 2] = 0.0
    baseline = NetworkBaseline.fit(windows)
    assert np.abs(np.median(baseline.normalise(windows)[..., :2])) < 0.2
    appeared = windows[:1].copy()
    appeared[..., 2] = 100.0  # the absent code appears
    z = baseline.normalise(appeared)
    assert z.dtype == np.float32
    assert np.allclose(z[..., 2], np.log1p(100.0) / SCALE_FLOOR, rtol=1e-4)
    surge = windows[:1] * 1e30
    assert np.abs(baseline.normalise(surge)).max() == Z_LIMIT


def test_a_small_network_and_a_large_one_read_alike_relative_to_their_baselines() -> None:
    rng = np.random.default_rng(4)
    small, large = _traffic(rng, 20, 50.0), _traffic(rng, 20, 50_000.0)
    za = NetworkBaseline.fit(small).normalise(small * np.array([1, 1, 10], np.float32))
    zb = NetworkBaseline.fit(large).normalise(large * np.array([1, 1, 10], np.float32))
    # A tenfold rise in the third statistic reads as a large positive z on both networks.
    assert np.median(za[..., 2]) > 5 and np.median(zb[..., 2]) > 5
    assert abs(np.median(za[..., 0])) < 1 and abs(np.median(zb[..., 0])) < 1


def test_a_baseline_survives_its_packed_bytes_and_corrupt_bytes_are_refused() -> None:
    baseline = NetworkBaseline.fit(_traffic(np.random.default_rng(5), 4, 100.0))
    back = NetworkBaseline.from_bytes(baseline.to_bytes(), baseline.minutes)
    assert np.array_equal(back.centre, baseline.centre) and np.array_equal(back.scale, baseline.scale)
    with pytest.raises(ValueError, match="two finite vectors"):
        NetworkBaseline.from_bytes(baseline.to_bytes()[:-4], 1)
    nan = np.full(6, np.nan, "<f4").tobytes()
    with pytest.raises(ValueError, match="two finite vectors"):
        NetworkBaseline.from_bytes(nan, 1)
    with pytest.raises(ValueError, match="below its floor"):
        NetworkBaseline.from_bytes(np.zeros(6, "<f4").tobytes(), 1)


def test_a_baseline_needs_an_hour_of_minutes() -> None:
    with pytest.raises(ValueError, match="at least 60 minutes"):
        NetworkBaseline.fit(np.ones((1, 30, 3), np.float32))


def test_departures_are_measured_in_each_statistics_normal_range() -> None:
    rng = np.random.default_rng(3)
    windows = _traffic(rng, 20, 400.0)
    windows[..., 1] = rng.poisson(0.05, windows.shape[:2])  # a sparse count: 0, now and then 1
    baseline = NetworkBaseline.fit(windows)
    assert baseline.band is not None and (baseline.band >= 1.0).all()
    assert baseline.band[1] > 3 * baseline.band[0], "the sparse count swings far in healthy traffic"
    # A minute as sparse as usual stays within its range; a burst of a busy count does not.
    usual = np.array([[400.0, 0.0, 400.0]], np.float32)
    burst = np.array([[4000.0, 0.0, 400.0]], np.float32)
    assert np.abs(baseline.departure(usual)).max() <= 1.0
    assert baseline.departure(burst)[0] > 5.0
    unbanded = NetworkBaseline(baseline.centre, baseline.scale, baseline.minutes)
    assert np.allclose(unbanded.departure(burst), baseline.normalise(burst).mean(axis=0))
