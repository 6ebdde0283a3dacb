"""The trainer's transfer path end to end on the command line: train on random simulated networks
with network baselines, then score the artifact with the transfer protocol on rows of a network it
never saw."""

from __future__ import annotations

import json
from pathlib import Path

from faultprint.encoder.artifact import read_metadata
from faultprint.trainer.__main__ import main
from faultprint.trainer.protocol import MODEL, RAW_1NN, STRONG_BASELINE, reports_from_dict

TINY_TRANSFER = {
    "tower": {"steps": 60, "features": 129, "lstm_units": [8, 8], "dense_units": 16, "embedding_size": 8,
              "summary_units": 32, "network_baseline": True},
    "random_networks": 5, "validation_networks": 1, "nodes_per_network": 2, "days_per_network": 2,
    "epochs": 1, "batches_per_epoch": 20, "statistic_dropout": 0.1, "gain_range": [0.8, 1.2],
}  # fmt: skip


def test_train_on_random_networks_then_evaluate_the_transfer_protocol_on_unseen_rows(
    tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "tiny-transfer.json"
    config.write_text(json.dumps(TINY_TRANSFER))
    rows = tmp_path / "unseen.parquet"
    assert main(["simulate", "--out", str(rows), "--networks", "island-apac", "--nodes", "3", "--days", "3",
                 "--faults-per-day", "8"]) == 0  # fmt: skip
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "art"), "--no-tensorboard",
                 "--no-progress", "--eval-rows", str(rows)]) == 0  # fmt: skip
    artifact = Path(capsys.readouterr().out.strip().splitlines()[-1])
    metadata = read_metadata(artifact)
    assert metadata.network_baseline
    assert metadata.training["evaluation"] is None
    reports = reports_from_dict(metadata.training["transfer"])
    assert [r.network for r in reports] == ["unseen-0", "unseen-1", "unseen-2", "unseen-3", "island-apac"]
    for report in reports:
        assert set(report.methods) == {MODEL, RAW_1NN, STRONG_BASELINE}
        assert 0.0 <= report.score().balanced_accuracy <= 1.0

    out = tmp_path / "eval"
    assert main(["evaluate-transfer", str(artifact), "--rows", str(rows), "--draws", "2", "--node-samples", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "## island-apac" in text and "| strong_baseline |" in text
    (report,) = reports_from_dict(json.loads((out / "transfer.json").read_text()))
    assert report.nodes == 3 and report.diagnosed_windows["normal"] > 0
