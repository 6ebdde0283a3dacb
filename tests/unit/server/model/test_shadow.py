"""Shadow sampling and agreement counting (the candidate's classification itself is integration-tested)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from faultprint.registry.layout import RedisLayout
from faultprint.server.model.shadow import Shadow, ShadowOptions, agreement_counts, diagnosis
from faultprint.server.references.index import Match


def match(label: str, verdict: str = "fault") -> Match:
    return Match(label, verdict, 0.1, None, ())


def shadow(candidate: object, **options: Any) -> Shadow:
    host = SimpleNamespace(candidate=candidate)
    return Shadow(host, None, RedisLayout("t"), ShadowOptions(**options), seed=1)  # type: ignore[arg-type]


def requests(n: int, network: str | None = "net") -> list[SimpleNamespace]:
    return [SimpleNamespace(network=network, values=np.full((2, 2), i, np.float32)) for i in range(n)]


def test_agreement_counts_windows_same_and_each_change() -> None:
    counts = agreement_counts(
        ["normal", "normal", "hss_slow", "unknown"], ["normal", "hss_slow", "hss_slow", "normal"]
    )
    assert counts == {"windows": 4, "same": 2, "normal>hss_slow": 1, "unknown>normal": 1}


def test_a_diagnosis_beyond_the_threshold_is_unknown_whatever_the_nearest_label() -> None:
    assert diagnosis(match("dns_failure", "unknown")) == "unknown"
    assert diagnosis(match("normal", "normal")) == "normal"


def test_nothing_is_sampled_without_a_candidate_or_with_a_zero_rate() -> None:
    for s in (shadow(None, sample_rate=1.0), shadow(object(), sample_rate=0.0)):
        s.offer(requests(10), [match("normal")] * 10)
        assert not s._pending


def test_sampling_keeps_the_stable_diagnosis_and_never_queues_beyond_its_bound() -> None:
    s = shadow(object(), sample_rate=1.0, max_pending_windows=3)
    s.offer(requests(5), [match("normal"), match("x", "unknown"), match("a"), match("b"), match("c")])
    assert [p.stable for p in s._pending] == ["normal", "unknown", "a"]
    assert s.skipped == 2
    assert s._pending[1].values[0, 0] == 1  # the window itself, not a copy of a reused buffer


def test_windows_that_were_only_embedded_are_not_sampled() -> None:
    s = shadow(object(), sample_rate=1.0)
    s.offer(requests(2, network=None) + requests(1), [None, None, match("a")])
    assert len(s._pending) == 1


def test_the_sample_rate_is_honoured_on_average() -> None:
    s = shadow(object(), sample_rate=0.1, max_pending_windows=100_000)
    for _ in range(100):
        s.offer(requests(100), [match("a")] * 100)
    assert 800 < len(s._pending) < 1200


@pytest.mark.parametrize("bad", [{"sample_rate": 1.5}, {"chunk_windows": 0}, {"flush_interval_s": 0}])
def test_options_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ShadowOptions(**bad)
