"""Artifact signatures: sign and verify, the wrong key, a tampered blob or directory, a missing signature, key ids."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from faultprint.encoder.artifact import ModelMetadata, sha256_hex
from faultprint.registry.signing import (
    KEY_ID_FIELD,
    KEY_ID_HEX,
    SIGNATURE_FIELD,
    SIGNATURE_FILE,
    Signature,
    SignatureError,
    SigningKeyError,
    TrustedKeys,
    generate_key_pair,
    key_id,
    load_private_key,
    load_public_key,
    sign,
    sign_directory,
    stored_signature,
    tree_digest,
    verify_directory,
)

BLOB = b"a packed artifact" * 100


def key_pair(folder: Path) -> tuple[Path, Path]:
    private, public, _ = generate_key_pair(folder)
    return private, public


@pytest.fixture
def ours(tmp_path: Path) -> tuple[Path, Path]:
    return key_pair(tmp_path / "ours")


@pytest.fixture
def theirs(tmp_path: Path) -> tuple[Path, Path]:
    return key_pair(tmp_path / "theirs")


def test_a_signature_verifies_with_the_key_that_made_it(ours: tuple[Path, Path]) -> None:
    digest = sha256_hex(BLOB)
    signature = sign(load_private_key(ours[0]), "v1", digest)
    assert len(base64.b64decode(signature.value)) == 64
    assert TrustedKeys.from_files([ours[1]]).verify("v1", digest, signature) == signature.key_id


def test_the_key_id_is_the_start_of_the_sha256_of_the_raw_public_key(ours: tuple[Path, Path]) -> None:
    public = load_public_key(ours[1])
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(public) == hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]
    assert len(key_id(public)) == 16
    assert generate_key_pair(ours[0].parent / "more")[2] != key_id(public)
    assert sign(load_private_key(ours[0]), "v1", "00").key_id == key_id(public)


def test_a_signature_by_a_key_not_trusted_names_its_unknown_key_id(
    ours: tuple[Path, Path], theirs: tuple[Path, Path]
) -> None:
    digest = sha256_hex(BLOB)
    signature = sign(load_private_key(theirs[0]), "v1", digest)
    with pytest.raises(SignatureError, match=f"signed by unknown key id '{signature.key_id}'"):
        TrustedKeys.from_files([ours[1]]).verify("v1", digest, signature)
    both = TrustedKeys.from_setting(f"{ours[1]}, {theirs[1]}")
    assert both.verify("v1", digest, signature) == signature.key_id


def test_a_signature_by_another_key_claiming_a_trusted_key_id_is_bad(
    ours: tuple[Path, Path], theirs: tuple[Path, Path]
) -> None:
    digest = sha256_hex(BLOB)
    forged = sign(load_private_key(theirs[0]), "v1", digest)
    trusted_id = key_id(load_public_key(ours[1]))
    with pytest.raises(SignatureError, match="bad signature"):
        TrustedKeys.from_files([ours[1]]).verify("v1", digest, Signature(trusted_id, forged.value))


def test_a_tampered_blob_or_another_version_does_not_verify(ours: tuple[Path, Path]) -> None:
    trusted = TrustedKeys.from_files([ours[1]])
    signature = sign(load_private_key(ours[0]), "v1", sha256_hex(BLOB))
    tampered = BLOB[:-1] + b"!"
    with pytest.raises(SignatureError, match="model version v1 has a bad signature"):
        trusted.verify("v1", sha256_hex(tampered), signature)
    with pytest.raises(SignatureError, match="model version v2 has a bad signature"):
        trusted.verify("v2", sha256_hex(BLOB), signature)


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_a_malformed_signature_is_bad(ours: tuple[Path, Path], value: str) -> None:
    trusted = TrustedKeys.from_files([ours[1]])
    signer = key_id(load_public_key(ours[1]))
    with pytest.raises(SignatureError, match="bad signature"):
        trusted.verify("v1", sha256_hex(BLOB), Signature(signer, value))


def test_a_missing_signature_is_unsigned(ours: tuple[Path, Path]) -> None:
    trusted = TrustedKeys.from_files([ours[1]])
    assert stored_signature(None, None) is None
    assert stored_signature(b"c2ln", None) is None
    assert stored_signature(b"", b"0123456789abcdef") is None
    with pytest.raises(SignatureError, match="model version v1 is unsigned"):
        trusted.verify("v1", sha256_hex(BLOB), None)


def test_the_registry_fields_round_trip_as_redis_returns_them(ours: tuple[Path, Path]) -> None:
    signature = sign(load_private_key(ours[0]), "v1", sha256_hex(BLOB))
    fields = signature.fields()
    assert set(fields) == {SIGNATURE_FIELD, KEY_ID_FIELD}
    stored = {name: value.encode() for name, value in fields.items()}
    assert stored_signature(stored[SIGNATURE_FIELD], stored[KEY_ID_FIELD]) == signature


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_replaces_one(tmp_path: Path) -> None:
    private, public, made = generate_key_pair(tmp_path / "keys")
    assert private.stat().st_mode & 0o777 == 0o600
    assert key_id(load_public_key(public)) == made == key_id(load_private_key(private).public_key())
    before = private.read_bytes()
    with pytest.raises(SigningKeyError, match="never replaces a key"):
        generate_key_pair(tmp_path / "keys")
    assert private.read_bytes() == before


def test_a_key_file_that_is_missing_or_not_ed25519_is_refused(
    tmp_path: Path, ours: tuple[Path, Path]
) -> None:
    with pytest.raises(SigningKeyError, match="cannot read the trusted key"):
        load_public_key(tmp_path / "missing.pem")
    with pytest.raises(SigningKeyError, match="cannot read the trusted key"):
        load_public_key(ours[0])  # a private key where a public one belongs
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = tmp_path / "ec.pem"
    pem.write_bytes(
        other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SigningKeyError, match="not an Ed25519 public key"):
        load_public_key(pem)
    with pytest.raises(SigningKeyError, match="no trusted key"):
        TrustedKeys.from_setting(" , ")


def artifact_dir(folder: Path, version: str = "v1") -> Path:
    """Files laid out as an artifact (the encoder is a stand-in: nothing here loads it)."""
    metadata = ModelMetadata(version=version, steps=2, features=2, embedding_size=3, distance_threshold=0.5,
                             feature_names=("a", "b"))  # fmt: skip
    (folder / "saved_model" / "variables").mkdir(parents=True)
    (folder / "metadata.json").write_text(metadata.to_json())
    (folder / "encoder.keras").write_bytes(b"weights" * 50)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    (folder / "saved_model" / "variables" / "variables.index").write_bytes(b"index")
    return folder


def test_a_signed_directory_verifies_and_any_change_to_what_is_served_breaks_it(
    tmp_path: Path, ours: tuple[Path, Path]
) -> None:
    folder = artifact_dir(tmp_path / "artifact")
    trusted = TrustedKeys.from_files([ours[1]])
    path = sign_directory(folder, load_private_key(ours[0]))
    assert path == folder / SIGNATURE_FILE
    assert json.loads(path.read_text())["version"] == "v1"
    assert verify_directory(folder, trusted) == key_id(load_public_key(ours[1]))
    (folder / "evaluation").mkdir()
    (folder / "evaluation" / "report.md").write_text("not part of the model")
    assert verify_directory(folder, trusted)

    (folder / "saved_model" / "variables" / "extra").write_bytes(b"planted")
    with pytest.raises(SignatureError, match="bad signature"):
        verify_directory(folder, trusted)
    (folder / "saved_model" / "variables" / "extra").unlink()
    (folder / "encoder.keras").write_bytes(b"weights" * 49 + b"WEIGHTS")
    with pytest.raises(SignatureError, match="bad signature"):
        verify_directory(folder, trusted)


def test_a_directory_without_a_signature_file_is_unsigned(tmp_path: Path, ours: tuple[Path, Path]) -> None:
    folder = artifact_dir(tmp_path / "artifact")
    with pytest.raises(SignatureError, match="model version v1 is unsigned"):
        verify_directory(folder, TrustedKeys.from_files([ours[1]]))
    (folder / SIGNATURE_FILE).write_text("{not json")
    with pytest.raises(SignatureError, match="unreadable signature file"):
        verify_directory(folder, TrustedKeys.from_files([ours[1]]))


def test_a_directory_digest_depends_on_paths_and_contents_not_on_the_copy(tmp_path: Path) -> None:
    first, second = artifact_dir(tmp_path / "a"), artifact_dir(tmp_path / "b")
    assert tree_digest(first) == tree_digest(second)
    (second / "saved_model" / "saved_model.pb").rename(
        second / "saved_model" / "variables" / "saved_model.pb"
    )
    assert tree_digest(first) != tree_digest(second)
