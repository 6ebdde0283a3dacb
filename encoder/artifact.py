"""The versioned model artifact: what the trainer publishes and every server replica loads.

An artifact is a directory holding
- ``encoder.keras``: the tower, rebuilt and traced by each server on its own device
  (Keras picks the cuDNN LSTM kernel when it traces on a GPU, so a graph traced on
  the trainer's CPU would not use it);
- ``saved_model/``: the same tower as a TensorFlow SavedModel with a
  ``serving_default`` signature, for TF-Serving-compatible tools;
- ``metadata.json``: version, input spec, embedding size, distance threshold,
  feature names and the training record;
- ``probes.npz`` (optional): a few varied windows and the embeddings the exporter's
  tower gave them, which a server's traced graphs must reproduce before it serves.
It travels between processes as a gzip'd tar with its sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The version names a Redis key and the model cache's directory for it, so it follows the
# registry's id rule.
from faultprint.registry.ids import ID_RULE, is_valid_id, quote

ARTIFACT_FORMAT = 1
METADATA_FILE = "metadata.json"
KERAS_FILE = "encoder.keras"
SAVED_MODEL_DIR = "saved_model"
PROBES_FILE = "probes.npz"
# What an artifact is packed from, in order (PROBES_FILE only where present).
ARTIFACT_FILES = (METADATA_FILE, KERAS_FILE, SAVED_MODEL_DIR, PROBES_FILE)


class ArtifactError(Exception):
    """An artifact is missing, corrupt, or does not describe a usable encoder."""


def check_version(version: object) -> str:
    """version, if it may name a model version; else ArtifactError."""
    if not isinstance(version, str) or not is_valid_id(version):
        raise ArtifactError(f"model version {quote(version)} is not a valid id: use {ID_RULE}")
    return version


@dataclass(frozen=True)
class ModelMetadata:
    """What a server must know about a model before it serves it."""

    # Unique version name, such as "20261121-101500-3f2a".
    version: str
    # Minutes per window.
    steps: int
    # Statistics per minute.
    features: int
    # Length of an embedding.
    embedding_size: int
    # A window farther than this from every reference case is diagnosed as unknown.
    distance_threshold: float
    # Name of each statistic, in column order.
    feature_names: tuple[str, ...]
    # The TowerConfig the model was built with.
    tower: dict[str, Any] = field(default_factory=dict)
    # Hyper-parameters, data description and evaluation figures.
    training: dict[str, Any] = field(default_factory=dict)
    # The version this one was trained to replace, if any.
    parent_version: str | None = None
    # Seconds since the Unix epoch at export.
    created_unix_s: float = 0.0
    artifact_format: int = ARTIFACT_FORMAT

    def __post_init__(self) -> None:
        problems = []
        try:
            check_version(self.version)
        except ArtifactError as exc:
            problems.append(str(exc))
        if min(self.steps, self.features, self.embedding_size) < 1:
            problems.append(
                f"steps, features and embedding_size must be positive, got "
                f"{self.steps}, {self.features}, {self.embedding_size}"
            )
        if len(self.feature_names) != self.features:
            problems.append(f"{len(self.feature_names)} feature names for {self.features} features")
        if not self.distance_threshold > 0:
            problems.append(f"distance_threshold must be positive, got {self.distance_threshold}")
        if self.artifact_format != ARTIFACT_FORMAT:
            problems.append(f"artifact format {self.artifact_format}, this build reads {ARTIFACT_FORMAT}")
        if problems:
            raise ArtifactError("invalid model metadata: " + "; ".join(problems))

    @property
    def network_baseline(self) -> bool:
        """The tower reads windows normalised by their network's baseline (traffic/baseline.py)."""
        return bool(self.tower.get("network_baseline", False))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            raw = json.loads(text)
            raw["feature_names"] = tuple(raw["feature_names"])
            return cls(**raw)
        except ArtifactError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ArtifactError(f"unreadable model metadata: {exc}") from exc


def read_metadata(artifact_dir: Path) -> ModelMetadata:
    """Reads and validates an artifact directory's metadata."""
    path = Path(artifact_dir) / METADATA_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise ArtifactError(f"no model metadata at {path}: {exc}") from exc
    return ModelMetadata.from_json(text)


def write_artifact(
    tower: Any, metadata: ModelMetadata, out_dir: Path, probe_windows: np.ndarray | None = None
) -> Path:
    """Writes the tower and its metadata as an artifact directory, with the tower's embeddings
    of probe_windows (n, steps, features) when given; returns the directory."""
    import keras
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tower.save(out_dir / KERAS_FILE)
    archive = keras.export.ExportArchive()
    archive.track(tower)
    spec = tf.TensorSpec([None, metadata.steps, metadata.features], tf.float32, name="windows")
    archive.add_endpoint("serve", lambda windows: {"embeddings": tower(windows, training=False)}, [spec])
    archive.write_out(str(out_dir / SAVED_MODEL_DIR), verbose=False)
    if probe_windows is not None:
        windows = np.ascontiguousarray(probe_windows, dtype=np.float32)
        embeddings = np.asarray(tower(windows, training=False), dtype=np.float32)
        np.savez_compressed(out_dir / PROBES_FILE, windows=windows, embeddings=embeddings)
    (out_dir / METADATA_FILE).write_text(metadata.to_json())
    return out_dir


def read_probes(artifact_dir: Path, metadata: ModelMetadata) -> tuple[np.ndarray, np.ndarray] | None:
    """The artifact's probe windows and the embeddings its exporter computed for them; None
    when it carries none."""
    path = Path(artifact_dir) / PROBES_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as probes:
            windows = np.asarray(probes["windows"], dtype=np.float32)
            embeddings = np.asarray(probes["embeddings"], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{PROBES_FILE} of version {metadata.version} is corrupt: {exc}") from exc
    count = len(windows)
    if (
        count < 2
        or windows.shape[1:] != (metadata.steps, metadata.features)
        or embeddings.shape != (count, metadata.embedding_size)
        or not np.isfinite(windows).all()
    ):
        raise ArtifactError(
            f"{PROBES_FILE} of version {metadata.version} holds windows {windows.shape} and embeddings "
            f"{embeddings.shape}; expected at least 2 finite windows (n, {metadata.steps}, "
            f"{metadata.features}) and embeddings (n, {metadata.embedding_size})"
        )
    return windows, embeddings


def load_tower(artifact_dir: Path, metadata: ModelMetadata) -> Any:
    """The artifact's Keras tower, checked against the input spec its metadata declares."""
    import keras

    import faultprint.encoder.tower  # noqa: F401  (registers the tower's layers for deserialisation)

    path = Path(artifact_dir) / KERAS_FILE
    if not path.is_file():
        raise ArtifactError(f"encoder file {path} of version {metadata.version} is missing")
    # Keras reports any file it cannot open as "File not found", a corrupt one included.
    if not zipfile.is_zipfile(path):
        raise ArtifactError(
            f"encoder file {path} of version {metadata.version} is corrupt: not a zip archive"
        )
    try:
        tower = keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise ArtifactError(
            f"encoder file {path} of version {metadata.version} is corrupt or from an incompatible "
            f"Keras: {type(exc).__name__}: {exc}"
        ) from exc
    expected = (None, metadata.steps, metadata.features)
    if tuple(tower.input_shape) != expected or tower.output_shape[-1] != metadata.embedding_size:
        raise ArtifactError(
            f"encoder input {tower.input_shape} / output {tower.output_shape} disagree with "
            f"metadata input {expected} / embedding size {metadata.embedding_size}"
        )
    return tower


def pack_artifact(artifact_dir: Path) -> bytes:
    """Packs an artifact directory into gzip'd tar bytes."""
    read_metadata(artifact_dir)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ARTIFACT_FILES:
            if name != PROBES_FILE or (Path(artifact_dir) / name).exists():
                tar.add(Path(artifact_dir) / name, arcname=name)
    return buffer.getvalue()


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def unpack_artifact(blob: bytes, expected_sha256: str, dest_dir: Path) -> ModelMetadata:
    """Checks the digest, unpacks into dest_dir and returns the validated metadata."""
    actual = sha256_hex(blob)
    if actual != expected_sha256:
        raise ArtifactError(
            f"artifact digest mismatch: sha256 {actual[:12]}..., expected {expected_sha256[:12]}..."
        )
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            tar.extractall(dest_dir, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArtifactError(f"artifact archive is corrupt: {exc}") from exc
    return read_metadata(dest_dir)
