"""The trainer's key commands: keygen makes a pair, sign signs an artifact directory with the key
--signing-key or FAULTPRINT_SIGNING_KEY names."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultprint.registry.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, TrustedKeys, verify_directory
from faultprint.trainer.__main__ import main
from tests.unit.registry.test_signing import artifact_dir


def test_keygen_then_sign_with_the_key_the_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FAULTPRINT_SIGNING_KEY", raising=False)
    keys = tmp_path / "keys"
    assert main(["keygen", "--out", str(keys)]) == 0
    said = capsys.readouterr().out
    trusted = TrustedKeys.from_files([keys / PUBLIC_KEY_FILE])
    assert f"key id {next(iter(trusted.keys))}" in said and str(keys / PRIVATE_KEY_FILE) in said
    assert main(["keygen", "--out", str(keys)]) == 2  # never replaces a key
    assert "never replaces a key" in capsys.readouterr().err

    folder = artifact_dir(tmp_path / "artifact")
    assert main(["sign", str(folder)]) == 2
    assert "--signing-key" in capsys.readouterr().err
    monkeypatch.setenv("FAULTPRINT_SIGNING_KEY", str(keys / PRIVATE_KEY_FILE))
    assert main(["sign", str(folder)]) == 0
    assert verify_directory(folder, trusted) == next(iter(trusted.keys))


def test_a_signing_key_that_cannot_be_read_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = artifact_dir(tmp_path / "artifact")
    assert main(["sign", str(folder), "--signing-key", str(tmp_path / "missing.pem")]) == 2
    assert capsys.readouterr().err.startswith("sign: cannot read the signing key")
