"""The trainer's side of rollout: a model must beat the stable one, and load, before servers see it.

Publishing evaluates the new artifact and the registry's stable version on the same
one-shot split (trainer/evaluation.py, with the new model's conditions) and refuses a
model whose one-shot accuracy is lower, unless forced; the comparison is recorded
with the version. Promotion first downloads the version from the registry, checks its
digest, loads its encoder and checks its embeddings of probe windows as a server does
(server/model/runner.py), so a version that cannot load, or is degenerate, never reaches
a server.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from faultprint.encoder.artifact import ArtifactError, load_tower, read_metadata
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import download_artifact, promote, publish_artifact
from faultprint.server.model.runner import ModelRunner, RunnerOptions
from faultprint.traffic.catalogue import NUM_FEATURES
from faultprint.trainer.evaluation import (
    EvaluationOptions,
    EvaluationReport,
    evaluate_tower,
    trained_conditions,
)

log = logging.getLogger(__name__)


class PublishRefused(Exception):
    """The model did worse than the stable one (or could not be compared), and was not forced."""


@dataclass(frozen=True)
class Comparison:
    """The publishing gate's figures: mean one-shot accuracy on the same split."""

    candidate: str
    candidate_accuracy: float | None
    stable: str | None
    stable_accuracy: float | None
    network: str
    forced: bool = False

    @property
    def worse(self) -> bool:
        if self.candidate_accuracy is None or self.stable_accuracy is None:
            return False
        return self.candidate_accuracy < self.stable_accuracy

    def summary(self) -> str:
        if self.candidate_accuracy is None:
            return f"{self.candidate}: not compared"
        if self.stable is None:
            return f"{self.candidate}: one-shot accuracy {self.candidate_accuracy:.3f} on {self.network}"
        return (
            f"one-shot accuracy on {self.network}: {self.candidate} {self.candidate_accuracy:.3f}, "
            f"stable {self.stable} {self.stable_accuracy:.3f}"
        )


def evaluate_artifact(artifact_dir: Path, options: EvaluationOptions,
                      conditions: tuple[str, ...] | None = None) -> EvaluationReport:  # fmt: skip
    """Evaluates an artifact on simulated traffic (conditions: those it was trained on)."""
    metadata = read_metadata(artifact_dir)
    if metadata.features != NUM_FEATURES:
        raise ArtifactError(
            f"version {metadata.version} reads {metadata.features} statistics per minute; the "
            f"evaluation simulates {NUM_FEATURES}"
        )
    tower = load_tower(artifact_dir, metadata)
    report, _ = evaluate_tower(tower, metadata.distance_threshold,
                               conditions or trained_conditions(metadata.training), options,
                               metadata.steps)  # fmt: skip
    return report


def compare_with_stable(client: redis.Redis, layout: RedisLayout, artifact_dir: Path,
                        options: EvaluationOptions) -> Comparison:  # fmt: skip
    """Scores the artifact and the registry's stable version on the same split."""
    metadata = read_metadata(artifact_dir)
    conditions = trained_conditions(metadata.training)
    candidate = evaluate_artifact(artifact_dir, options, conditions).headline()
    raw = client.get(layout.serving_version)
    if raw is None:
        return Comparison(metadata.version, candidate, None, None, options.network)
    stable = raw.decode() if isinstance(raw, bytes) else str(raw)
    with tempfile.TemporaryDirectory(prefix="faultprint-stable-") as tmp:
        stable_dir = download_artifact(client, layout, stable, Path(tmp))
        stable_accuracy = evaluate_artifact(stable_dir, options, conditions).headline()
    return Comparison(metadata.version, candidate, stable, stable_accuracy, options.network)


def publish_gated(client: redis.Redis, layout: RedisLayout, artifact_dir: Path, promote_it: bool,
                  force: bool, options: EvaluationOptions) -> Comparison:  # fmt: skip
    """Publishes as candidate (or stable) unless it does worse than the stable version."""
    try:
        comparison = compare_with_stable(client, layout, artifact_dir, options)
    except ArtifactError as exc:
        if not force:
            raise PublishRefused(f"cannot compare with the stable version ({exc}); use --force") from exc
        log.warning("publishing without comparison (forced): %s", exc)
        comparison = Comparison(read_metadata(artifact_dir).version, None, None, None, options.network)
    if comparison.worse and not force:
        raise PublishRefused(f"refused: worse than the stable version; {comparison.summary()} (--force)")
    comparison = Comparison(**{**asdict(comparison), "forced": force})
    publish_artifact(client, layout, artifact_dir, promote_it,
                     annotations={"evaluation_gate": json.dumps(asdict(comparison))})  # fmt: skip
    return comparison


def validate_and_promote(client: redis.Redis, layout: RedisLayout, version: str) -> str:
    """Downloads, verifies, loads and checks version before promoting it; returns the version it
    replaced."""
    with tempfile.TemporaryDirectory(prefix="faultprint-promote-") as tmp:
        # The plain graph alone: each server checks the graphs it runs when it loads the version.
        ModelRunner(download_artifact(client, layout, version, Path(tmp)), options=RunnerOptions(xla="off"))
    return promote(client, layout, version)
