"""Model versions that would name a path outside the model cache; missing, corrupt and probe files."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from faultprint.encoder.artifact import (
    ArtifactError,
    ModelMetadata,
    load_tower,
    pack_artifact,
    read_metadata,
    sha256_hex,
    unpack_artifact,
)
from faultprint.registry.models import install_artifact

# As cache_dir/<version>, '..' names the cache's parent and '.' the cache itself.
BAD_VERSIONS = ["..", ".", "a/b", "x\n", "v" * 1000]


def metadata_json(version: str) -> str:
    """Valid metadata but for the version, written as an attacker would, past ModelMetadata's checks."""
    good = ModelMetadata(version="v1", steps=2, features=2, embedding_size=3, distance_threshold=0.5,
                         feature_names=("a", "b"))  # fmt: skip
    return json.dumps({**json.loads(good.to_json()), "version": version})


def packed(version: str) -> bytes:
    """A packed artifact whose metadata names version."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = metadata_json(version).encode()
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty model cache beside a sentinel file that no version may reach."""
    (tmp_path / "sentinel").write_text("keep")
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


@pytest.mark.parametrize("version", BAD_VERSIONS, ids=["dotdot", "dot", "slash", "newline", "long"])
def test_install_refuses_a_version_that_is_not_an_id_and_touches_no_file(
    cache_dir: Path, version: str
) -> None:
    blob = packed(version)
    before = tree(cache_dir.parent)
    with pytest.raises(ArtifactError, match="not a valid id") as err:
        install_artifact(version, blob, sha256_hex(blob), cache_dir)
    assert (cache_dir.parent / "sentinel").read_text() == "keep"
    assert tree(cache_dir.parent) == before
    assert len(str(err.value)) < 300  # a long id is quoted, not repeated


def test_install_unpacks_a_valid_version_into_the_cache(cache_dir: Path) -> None:
    blob = packed("v1")
    target = install_artifact("v1", blob, sha256_hex(blob), cache_dir)
    assert target == cache_dir / "v1"
    assert read_metadata(target).version == "v1"


def test_install_refuses_a_cache_entry_that_leads_outside_the_cache(cache_dir: Path) -> None:
    outside = cache_dir.parent / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (cache_dir / "v1").symlink_to(outside, target_is_directory=True)
    blob = packed("v1")
    with pytest.raises(ArtifactError, match="outside the model cache"):
        install_artifact("v1", blob, sha256_hex(blob), cache_dir)
    assert (outside / "keep").read_text() == "keep"


@pytest.mark.parametrize("version", [*BAD_VERSIONS, "", "a:b", "-a"])
def test_metadata_refuses_a_version_that_is_not_an_id(version: str) -> None:
    with pytest.raises(ArtifactError, match="not a valid id") as err:
        ModelMetadata.from_json(metadata_json(version))
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("version", ["20261121-101500-3f2a", "untrained-x", "v1.2_rc-3", "a" * 128])
def test_metadata_accepts_version_ids(version: str) -> None:
    assert ModelMetadata.from_json(metadata_json(version)).version == version


def artifact_with_encoder(source: Path, dest: Path, encoder: bytes | None) -> Path:
    """A copy of an artifact with its encoder.keras replaced (None: removed)."""
    shutil.copytree(source, dest)
    (dest / "encoder.keras").unlink()
    if encoder is not None:
        (dest / "encoder.keras").write_bytes(encoder)
    return dest


def test_a_corrupt_encoder_file_is_reported_as_corrupt(artifact: Path, tmp_path: Path) -> None:
    whole = (artifact / "encoder.keras").read_bytes()
    for name, content in (
        ("garbage", b"\x00not a keras archive" * 50),
        ("truncated", whole[: len(whole) // 2]),
    ):
        broken = artifact_with_encoder(artifact, tmp_path / name, content)
        with pytest.raises(ArtifactError) as err:
            load_tower(broken, read_metadata(broken))
        assert str(broken / "encoder.keras") in str(err.value)
        said = str(err.value).replace(str(broken), "").lower()  # the path holds the test's name
        assert "corrupt" in said and "not found" not in said and "missing" not in said


def test_a_missing_encoder_file_is_reported_as_missing(artifact: Path, tmp_path: Path) -> None:
    broken = artifact_with_encoder(artifact, tmp_path / "missing", None)
    with pytest.raises(ArtifactError) as err:
        load_tower(broken, read_metadata(broken))
    assert str(broken / "encoder.keras") in str(err.value)
    said = str(err.value).replace(str(broken), "").lower()
    assert "missing" in said and "corrupt" not in said


def test_probe_windows_travel_with_the_artifact_and_are_optional(artifact: Path, tmp_path: Path) -> None:
    from faultprint.encoder.artifact import PROBES_FILE, read_probes

    metadata = read_metadata(artifact)
    windows, embeddings = read_probes(artifact, metadata) or pytest.fail("export wrote no probes")
    assert windows.shape[1:] == (metadata.steps, metadata.features)
    assert embeddings.shape == (len(windows), metadata.embedding_size)
    blob = pack_artifact(artifact)
    unpack_artifact(blob, sha256_hex(blob), tmp_path / "unpacked")
    assert (tmp_path / "unpacked" / PROBES_FILE).exists()

    shutil.copytree(artifact, tmp_path / "without")
    (tmp_path / "without" / PROBES_FILE).unlink()
    blob = pack_artifact(tmp_path / "without")
    unpack_artifact(blob, sha256_hex(blob), tmp_path / "unpacked-without")
    assert read_probes(tmp_path / "unpacked-without", metadata) is None


def test_malformed_probes_are_refused(artifact: Path, tmp_path: Path) -> None:
    from faultprint.encoder.artifact import PROBES_FILE, read_probes

    metadata = read_metadata(artifact)
    windows, embeddings = read_probes(artifact, metadata) or pytest.fail("export wrote no probes")
    cases: dict[str, bytes | tuple[np.ndarray, np.ndarray]] = {
        "corrupt": b"not an npz",
        "shape": (windows[:, :, :-1], embeddings),
        "count": (windows, embeddings[:-1]),
    }
    for name, content in cases.items():
        broken = tmp_path / name
        shutil.copytree(artifact, broken)
        if isinstance(content, bytes):
            (broken / PROBES_FILE).write_bytes(content)
        else:
            np.savez(broken / PROBES_FILE, windows=content[0], embeddings=content[1])
        with pytest.raises(ArtifactError, match=PROBES_FILE):
            read_probes(broken, metadata)
