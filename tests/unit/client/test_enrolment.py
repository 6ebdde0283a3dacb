"""Enrolment from row files: times as operators write them, and spans split into cases."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.client.enrolment import MAX_WINDOWS_PER_CASE, case_batches, parse_minute


def test_times_are_iso_8601_utc_or_minute_counts() -> None:
    assert parse_minute("2025-02-19T21:20Z") == 29_000_000
    assert parse_minute("2025-02-19T21:20") == 29_000_000  # naive: UTC
    assert parse_minute("2025-02-19T22:20+01:00") == 29_000_000
    assert parse_minute("29000061") == 29_000_061
    with pytest.raises(ValueError, match="neither an ISO 8601 time nor a minute count"):
        parse_minute("yesterday")


def test_a_long_span_becomes_as_few_even_cases_as_the_limit_allows() -> None:
    windows = np.zeros((MAX_WINDOWS_PER_CASE * 2 + 1, 2, 2), np.float32)
    sizes = [len(b) for b in case_batches(windows)]
    assert sizes == [43, 43, 43] and sum(sizes) == len(windows)
    assert [len(b) for b in case_batches(windows[:24])] == [24]
