"""The publishing gate's verdict: worse on simulated traffic or on any registered evaluation set."""

from __future__ import annotations

from faultprint.trainer.publishing import Comparison, SetFigures


def test_the_gate_finds_a_model_worse_when_it_is_worse_on_any_set() -> None:
    level = Comparison("new", 0.9, "old", 0.9, "sim")
    assert not level.worse
    assert Comparison("new", 0.9, "old", 0.8, "sim", eval_sets=(SetFigures("a.parquet", 0.7, 0.8),)).worse
    assert Comparison(
        "new", 0.9, "old", 0.8, "sim", eval_sets=(SetFigures("a.parquet", 0.8, 0.7),)
    ).summary() == ("one-shot figures on sim: new 0.900, stable old 0.800; on a.parquet: 0.800, stable 0.700")
    assert not Comparison(
        "new", 0.9, None, None, "sim", eval_sets=(SetFigures("a.parquet", 0.1, None),)
    ).worse
