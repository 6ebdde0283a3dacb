"""Ed25519 signatures on model artifacts: trusted keys, not write access to Redis, decide what is served."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from faultprint.encoder.artifact import ARTIFACT_FILES, ArtifactError, read_metadata
from faultprint.registry.ids import quote

# Fields of a version's metadata hash in the registry that carry its signature, beside sha256.
SIGNATURE_FIELD = "signature"
KEY_ID_FIELD = "signing_key_id"
# The signature of an artifact directory served as it is (--model-source DIR), inside it.
SIGNATURE_FILE = "signature.json"
# A key id is the first 16 hex digits (64 bits) of the sha256 of the raw 32-byte public key.
KEY_ID_HEX = 16
# What `faultprint-trainer keygen` writes.
PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "signing-key.pub.pem"


class SignatureError(ArtifactError):
    """A version is unsigned, signed by a key that is not trusted, or its signature does not verify."""


class SigningKeyError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key."""


@dataclass(frozen=True)
class Signature:
    """Who signed (the key id) and the signature itself (base64 of its 64 bytes)."""

    key_id: str
    value: str

    def fields(self) -> dict[str, str]:
        """The signature as the registry stores it in a version's metadata hash."""
        return {SIGNATURE_FIELD: self.value, KEY_ID_FIELD: self.key_id}


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def signed_message(version: str, digest: str) -> bytes:
    """What a signature covers: the version and its artifact's sha256, so that a signature of one
    version cannot vouch for another."""
    return f"faultprint model artifact {version} sha256 {digest}".encode()


def sign(private_key: Ed25519PrivateKey, version: str, digest: str) -> Signature:
    value = private_key.sign(signed_message(version, digest))
    return Signature(key_id(private_key.public_key()), base64.b64encode(value).decode())


def stored_signature(value: object, signer: object) -> Signature | None:
    """The signature in a version's signature and key id fields (bytes or str); None if either is missing."""
    texts = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in (value, signer)]
    if not all(isinstance(t, str) and t for t in texts):
        return None
    return Signature(str(texts[1]), str(texts[0]))


def generate_key_pair(out_dir: Path) -> tuple[Path, Path, str]:
    """Writes a new private key (PKCS8 PEM, readable by its owner only) and its public key (PEM)
    into out_dir; returns both paths and the key id. Never replaces a key file."""
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    taken = [str(p) for p in (private_path, public_path) if p.exists()]
    if taken:
        raise SigningKeyError(f"keygen never replaces a key; found {', '.join(taken)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        file.write(pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path, key_id(public)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the trusted key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a replica serves model versions from, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> TrustedKeys:
        keys = {key_id(key): key for key in map(load_public_key, paths)}
        if not keys:
            raise SigningKeyError("no trusted key files given")
        return cls(keys)

    @classmethod
    def from_setting(cls, files: str) -> TrustedKeys:
        """The keys of a comma-separated list of PEM files."""
        return cls.from_files(Path(name.strip()) for name in files.split(",") if name.strip())

    def verify(self, version: str, digest: str, signature: Signature | None) -> str:
        """The id of the trusted key that signed version's digest; SignatureError saying why not."""
        trusted = ", ".join(sorted(self.keys))
        if signature is None:
            raise SignatureError(
                f"model version {version} is unsigned; only versions signed by a trusted key ({trusted}) "
                "are served"
            )
        key = self.keys.get(signature.key_id)
        if key is None:
            raise SignatureError(
                f"model version {version} is signed by unknown key id {quote(signature.key_id)}; "
                f"trusted: {trusted}"
            )
        try:
            key.verify(base64.b64decode(signature.value, validate=True), signed_message(version, digest))
        except (InvalidSignature, binascii.Error, ValueError):
            raise SignatureError(
                f"model version {version} has a bad signature: it does not verify with trusted key "
                f"{signature.key_id} (the artifact, its digest or the signature was altered)"
            ) from None
        return signature.key_id


def tree_digest(artifact_dir: Path) -> str:
    """sha256 over each file an artifact is packed from, by path in order, and its sha256: the
    digest of a directory, which does not depend on how it was copied (a packed blob's does)."""
    root = Path(artifact_dir)
    digest = hashlib.sha256()
    for path in _artifact_files(root):
        with path.open("rb") as file:
            content = hashlib.file_digest(file, "sha256").hexdigest()
        digest.update(f"{path.relative_to(root).as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def _artifact_files(root: Path) -> list[Path]:
    files = []
    for name in ARTIFACT_FILES:
        path = root / name
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.exists():
            files.append(path)
    return files


def sign_directory(artifact_dir: Path, private_key: Ed25519PrivateKey) -> Path:
    """Writes the signature of an artifact directory into it (SIGNATURE_FILE); returns that file."""
    version = read_metadata(artifact_dir).version
    signature = sign(private_key, version, tree_digest(artifact_dir))
    path = Path(artifact_dir) / SIGNATURE_FILE
    record = {"version": version, "key_id": signature.key_id, "signature": signature.value}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def verify_directory(artifact_dir: Path, trusted: TrustedKeys) -> str:
    """The id of the trusted key that signed an artifact directory (one without SIGNATURE_FILE is
    unsigned); SignatureError saying why not."""
    version = read_metadata(artifact_dir).version
    path = Path(artifact_dir) / SIGNATURE_FILE
    return trusted.verify(version, tree_digest(artifact_dir), _read_signature_file(path))


def _read_signature_file(path: Path) -> Signature | None:
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        return stored_signature(record["signature"], record["key_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"unreadable signature file {path}: {exc}") from exc
