"""The trainer's side of rollout: a model must beat the stable one, and load, before servers see it.

Publishing evaluates the new artifact and the registry's stable version on the same
simulated traffic and on every evaluation set the operator registered (labelled rows of
their own networks, registry/eval_sets.py), and refuses a model that does worse on any of
them, unless forced; the comparison is recorded with the version. On simulated traffic two
models that read raw windows compare by one-shot accuracy on the simulated split
(trainer/evaluation.py); otherwise, and on every registered set, by the transfer protocol's
balanced accuracy at k = 1 (trainer/protocol.py), averaged over the set's networks. Given
a signing key, the artifact's digest is signed (registry/signing.py): replicas holding
trusted keys serve only signed versions.

Promotion first downloads the version from the registry, checks its digest, loads its
encoder and checks its embeddings of probe windows as a server does
(server/model/runner.py), so a version that cannot load, or is degenerate, never reaches
a server.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faultprint.encoder.artifact import ArtifactError, load_tower, read_metadata
from faultprint.registry import eval_sets
from faultprint.registry.connection import SyncRedis
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import download_artifact, promote, publish_artifact
from faultprint.server.model.runner import ModelRunner, RunnerOptions
from faultprint.traffic.catalogue import NUM_FEATURES
from faultprint.traffic.windowing import WindowSet
from faultprint.trainer.evaluation import (
    EvaluationOptions,
    EvaluationReport,
    evaluate_tower,
    trained_conditions,
)
from faultprint.trainer.networks import EVALUATION_NETWORKS, evaluation_networks, labelled_windows
from faultprint.trainer.protocol import MODEL, ProtocolOptions, evaluate_networks, tower_method

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Mean faults per node and day of the simulated networks the gate scores on.
FAULTS_PER_DAY = 7.0

log = logging.getLogger(__name__)


class PublishRefused(Exception):
    """The model did worse than the stable one (or could not be compared), and was not forced."""


@dataclass(frozen=True)
class SetFigures:
    """Both models' transfer figure on one registered evaluation set."""

    path: str
    candidate: float
    stable: float | None


@dataclass(frozen=True)
class Comparison:
    """The publishing gate's figures: on simulated traffic, and on each registered evaluation set."""

    candidate: str
    candidate_accuracy: float | None
    stable: str | None
    stable_accuracy: float | None
    network: str
    forced: bool = False
    eval_sets: tuple[SetFigures, ...] = ()

    @property
    def worse(self) -> bool:
        figures = [(self.candidate_accuracy, self.stable_accuracy)]
        figures += [(s.candidate, s.stable) for s in self.eval_sets]
        return any(c is not None and s is not None and c < s for c, s in figures)

    def summary(self) -> str:
        if self.candidate_accuracy is None:
            return f"{self.candidate}: not compared"
        stable = "" if self.stable is None else f", stable {self.stable} {self.stable_accuracy:.3f}"
        parts = [f"on {self.network}: {self.candidate} {self.candidate_accuracy:.3f}{stable}"]
        for s in self.eval_sets:
            theirs = "" if s.stable is None else f", stable {s.stable:.3f}"
            parts.append(f"on {Path(s.path).name}: {s.candidate:.3f}{theirs}")
        return "one-shot figures " + "; ".join(parts)


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


def transfer_figure(artifact_dir: Path, cut: WindowSet) -> float:
    """The model's balanced accuracy at k = 1 under the transfer protocol, averaged over the
    networks of cut (the baselines are not scored: the gate compares models)."""
    metadata = read_metadata(artifact_dir)
    tower = load_tower(artifact_dir, metadata)
    model, _ = tower_method(tower, metadata.network_baseline)
    reports = evaluate_networks(cut, {MODEL: (model, metadata.distance_threshold)}, ProtocolOptions())
    return float(np.mean([r.score().balanced_accuracy for r in reports]))


def _simulated_figures(candidate_dir: Path, stable_dir: Path | None, options: EvaluationOptions,
                       conditions: tuple[str, ...]) -> tuple[float, float | None, str]:  # fmt: skip
    """(candidate, stable, what was simulated): the simulated split when both models read raw
    windows, otherwise the transfer protocol on simulated networks neither trained on."""
    dirs = [candidate_dir] + ([stable_dir] if stable_dir else [])
    if not any(read_metadata(d).network_baseline for d in dirs):
        figures = [evaluate_artifact(d, options, conditions).headline() for d in dirs]
        return figures[0], (figures[1] if stable_dir else None), options.network
    cut = evaluation_networks(FAULTS_PER_DAY, conditions, options.seed)
    figures = [transfer_figure(d, cut) for d in dirs]
    return (
        figures[0],
        (figures[1] if stable_dir else None),
        f"{EVALUATION_NETWORKS} simulated unseen networks",
    )


def compare_with_stable(client: SyncRedis, layout: RedisLayout, artifact_dir: Path,
                        options: EvaluationOptions) -> Comparison:  # fmt: skip
    """Scores the artifact and the registry's stable version on simulated traffic and on every
    registered evaluation set (EvalSetError when one cannot be read as registered)."""
    metadata = read_metadata(artifact_dir)
    conditions = trained_conditions(metadata.training)
    sets = [(entry, entry.check()) for entry in eval_sets.registered(client, layout)]
    raw = client.get(layout.serving_version)
    stable = None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
    with tempfile.TemporaryDirectory(prefix="faultprint-stable-") as tmp:
        stable_dir = download_artifact(client, layout, stable, Path(tmp)) if stable else None
        candidate, stable_figure, network = _simulated_figures(artifact_dir, stable_dir, options, conditions)
        figures = []
        for entry, path in sets:
            cut = labelled_windows([path], conditions)
            theirs = transfer_figure(stable_dir, cut) if stable_dir else None
            figures.append(SetFigures(entry.path, transfer_figure(artifact_dir, cut), theirs))
    return Comparison(metadata.version, candidate, stable, stable_figure, network, eval_sets=tuple(figures))


def publish_gated(client: SyncRedis, layout: RedisLayout, artifact_dir: Path, promote_it: bool,
                  force: bool, options: EvaluationOptions,
                  signing_key: Ed25519PrivateKey | None = None) -> Comparison:  # fmt: skip
    """Publishes as candidate (or stable), signed with signing_key if given, unless it does
    worse than the stable version."""
    try:
        comparison = compare_with_stable(client, layout, artifact_dir, options)
    except (ArtifactError, eval_sets.EvalSetError) as exc:
        if not force:
            raise PublishRefused(f"cannot compare with the stable version ({exc}); use --force") from exc
        log.warning("publishing without comparison (forced): %s", exc)
        comparison = Comparison(read_metadata(artifact_dir).version, None, None, None, options.network)
    if comparison.worse and not force:
        raise PublishRefused(f"refused: worse than the stable version; {comparison.summary()} (--force)")
    comparison = replace(comparison, forced=force)
    publish_artifact(client, layout, artifact_dir, promote_it,
                     annotations={"evaluation_gate": json.dumps(asdict(comparison))},
                     signing_key=signing_key)  # fmt: skip
    return comparison


def validate_and_promote(client: SyncRedis, layout: RedisLayout, version: str) -> str:
    """Downloads, verifies, loads and checks version before promoting it; returns the version it
    replaced."""
    with tempfile.TemporaryDirectory(prefix="faultprint-promote-") as tmp:
        # The plain graph alone: each server checks the graphs it runs when it loads the version.
        ModelRunner(download_artifact(client, layout, version, Path(tmp)), options=RunnerOptions(xla="off"))
    return promote(client, layout, version)
