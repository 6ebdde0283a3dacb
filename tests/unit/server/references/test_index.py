"""Nearest-neighbour diagnosis: label, verdict, margin, neighbours and index updates."""

from __future__ import annotations

import numpy as np
import pytest

from faultprint.server.references.index import CaseEmbeddings, NetworkIndex, ReferenceIndex


def case(case_id: str, label: str, *points: tuple[float, float]) -> CaseEmbeddings:
    return CaseEmbeddings(case_id, label, np.array(points, dtype=np.float32))


INDEX = NetworkIndex(
    [
        case("n1", "normal", (0.0, 0.0), (0.0, 0.2)),
        case("h1", "hss_unreachable", (1.0, 0.0)),
        case("l1", "link_at_capacity", (0.0, 1.0)),
    ]
)


def test_nearest_case_is_measured_to_its_nearest_example() -> None:
    match = INDEX.match(np.array([0.0, 0.3]), top_k=3, threshold=1.0)
    assert match.label == "normal" and match.verdict == "normal"
    assert match.distance == pytest.approx(0.1)
    assert [n.case_id for n in match.neighbours] == ["n1", "l1", "h1"]
    assert match.margin == pytest.approx(0.7 - 0.1)


def test_fault_verdict_and_top_k_limit() -> None:
    match = INDEX.match(np.array([0.9, 0.0]), top_k=1, threshold=1.0)
    assert (match.label, match.verdict) == ("hss_unreachable", "fault")
    assert len(match.neighbours) == 1


def test_beyond_the_threshold_is_unknown_but_still_names_the_nearest() -> None:
    match = INDEX.match(np.array([4.0, 5.0]), top_k=2, threshold=1.0)
    assert match.verdict == "unknown" and match.label == "link_at_capacity"


def test_single_label_network_has_no_margin() -> None:
    index = NetworkIndex([case("a", "normal", (0.0, 0.0)), case("b", "normal", (1.0, 1.0))])
    assert index.match(np.zeros(2), 2, 1.0).margin is None


def test_put_and_remove_rebuild_only_that_network() -> None:
    index = ReferenceIndex("v1")
    index.put("net-a", case("n1", "normal", (0.0, 0.0)))
    index.put("net-b", case("n2", "normal", (3.0, 3.0)))
    index.put("net-a", case("h1", "hss_unreachable", (1.0, 0.0)))
    net_a = index.get("net-a")
    assert net_a is not None and [c.case_id for c in net_a.cases] == ["h1", "n1"]
    index.remove("net-a", "h1")
    index.remove("net-a", "h1")  # removing twice is harmless
    index.remove("net-a", "n1")
    assert index.networks() == ["net-b"]


def test_a_batch_of_matches_equals_matching_each_embedding_alone() -> None:
    rng = np.random.default_rng(3)
    cases = [
        CaseEmbeddings(f"case-{i}", label, rng.normal(size=(n, 4)).astype(np.float32))
        for i, (label, n) in enumerate([("normal", 3), ("hss_unreachable", 1), ("normal", 2), ("dns", 4)])
    ]
    index = NetworkIndex(cases)
    queries = rng.normal(size=(16, 4)).astype(np.float32)
    top_ks = [1, 2, 3, 4] * 4
    batch = index.match_many(queries, top_ks, threshold=2.0)
    for query, top_k, match in zip(queries, top_ks, batch, strict=True):
        distances = {
            c.case_id: float(np.linalg.norm(c.embeddings.astype(np.float64) - query, axis=1).min())
            for c in cases
        }
        nearest = sorted(distances, key=distances.get)  # type: ignore[arg-type]
        label_of = {c.case_id: c.label for c in cases}
        assert [n.case_id for n in match.neighbours] == nearest[:top_k]
        assert match.distance == pytest.approx(distances[nearest[0]], rel=1e-5)
        other = min(d for cid, d in distances.items() if label_of[cid] != label_of[nearest[0]])
        assert match.margin == pytest.approx(other - distances[nearest[0]], rel=1e-5)
        assert match.verdict == ("unknown" if match.distance > 2.0 else
                                 "normal" if match.label == "normal" else "fault")  # fmt: skip
