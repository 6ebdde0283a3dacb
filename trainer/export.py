"""Turns a training result into a versioned model artifact."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from encoder.artifact import ModelMetadata, write_artifact
from trainer.config import TrainingConfig
from trainer.features import FEATURE_NAMES
from trainer.training import TrainingResult


def new_version() -> str:
    """A sortable, unique version name: UTC time plus a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def export(
    result: TrainingResult, config: TrainingConfig, out_root: Path, parent_version: str | None = None
) -> Path:
    """Writes out_root/<version>/ and returns it."""
    version = new_version()
    metadata = ModelMetadata(
        version=version,
        steps=config.tower.steps,
        features=config.tower.features,
        embedding_size=config.tower.embedding_size,
        distance_threshold=result.distance_threshold,
        feature_names=FEATURE_NAMES,
        tower=config.tower.to_dict(),
        training={
            "config": config.to_dict(),
            "history": result.history,
            "validation_one_shot_accuracy": result.validation_one_shot_accuracy,
        },
        parent_version=parent_version,
        created_unix_s=time.time(),
    )
    return write_artifact(result.tower, metadata, Path(out_root) / version)
