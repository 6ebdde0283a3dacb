"""The embedding tower (cuDNN-eligible LSTMs, fitted scaler) and the artifact format's integrity checks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest

from faultprint.encoder.artifact import (
    ArtifactError,
    ModelMetadata,
    pack_artifact,
    sha256_hex,
    unpack_artifact,
)
from faultprint.encoder.tower import CUDNN_LSTM_SETTINGS, TowerConfig, build_tower


def test_lstm_layers_keep_the_cudnn_eligible_configuration() -> None:
    tower = build_tower(TowerConfig(steps=6, features=5, lstm_units=(4, 4), dense_units=4, embedding_size=3))
    lstms = [layer for layer in tower.layers if layer.__class__.__name__ == "LSTM"]
    assert len(lstms) == 2
    for layer in lstms:
        config = layer.get_config()
        for key, value in CUDNN_LSTM_SETTINGS.items():
            assert config[key] == value, f"{layer.name}.{key} = {config[key]!r} disables cuDNN"
        assert layer.use_cudnn in ("auto", True)
    assert not any(
        layer.__class__.__name__ == "BatchNormalization" and i < 3 for i, layer in enumerate(tower.layers)
    )


def test_default_sizes_are_the_original_design() -> None:
    config = TowerConfig()
    assert (config.lstm_units, config.dense_units, config.embedding_size) == ((512, 512), 512, 10)


def test_scaler_is_fitted_on_training_statistics_and_outputs_unit_norm_embeddings() -> None:
    keras.utils.set_random_seed(0)
    tower = build_tower(TowerConfig(steps=6, features=5, lstm_units=(8, 8), dense_units=16, embedding_size=3))
    rng = np.random.default_rng(0)
    windows = rng.gamma(2.0, 100.0, size=(32, 6, 5)).astype(np.float32)
    scaler = tower.get_layer("feature_scaler")
    scaler.fit(windows)
    scaled = np.asarray(scaler(windows))
    assert np.allclose(scaled.reshape(-1, 5).mean(0), 0, atol=1e-4)
    assert np.allclose(scaled.reshape(-1, 5).std(0), 1, atol=1e-3)
    assert np.allclose(np.linalg.norm(tower.predict(windows, verbose=0), axis=1), 1, atol=1e-5)


def metadata(**overrides: object) -> ModelMetadata:
    base = {"version": "v1", "steps": 2, "features": 2, "embedding_size": 3, "distance_threshold": 0.5,
            "feature_names": ("a", "b")}  # fmt: skip
    return ModelMetadata(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"version": "a:b"}, "version"),
        ({"feature_names": ("a",)}, "1 feature names for 2 features"),
        ({"distance_threshold": 0.0}, "distance_threshold"),
        ({"artifact_format": 99}, "artifact format 99"),
    ],
)
def test_metadata_is_validated(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        metadata(**overrides)


def test_metadata_round_trips_through_json() -> None:
    assert ModelMetadata.from_json(metadata().to_json()) == metadata()


def fake_artifact(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True)
    (tmp_path / "metadata.json").write_text(metadata().to_json())
    (tmp_path / "encoder.keras").write_bytes(b"weights")
    (tmp_path / "saved_model").mkdir()
    return tmp_path


def test_unpack_rejects_a_digest_mismatch_and_a_truncated_archive(tmp_path: Path) -> None:
    blob = pack_artifact(fake_artifact(tmp_path / "src"))
    assert unpack_artifact(blob, sha256_hex(blob), tmp_path / "ok").version == "v1"
    with pytest.raises(ArtifactError, match="digest mismatch"):
        unpack_artifact(blob[:-10], sha256_hex(blob), tmp_path / "bad")
    truncated = blob[: len(blob) // 2]
    with pytest.raises(ArtifactError, match="corrupt"):
        unpack_artifact(truncated, sha256_hex(truncated), tmp_path / "bad2")


def test_unpack_rejects_an_archive_without_metadata(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("encoder.keras")
        tar.addfile(info, io.BytesIO(b""))
    blob = buffer.getvalue()
    with pytest.raises(ArtifactError, match="no model metadata"):
        unpack_artifact(blob, sha256_hex(blob), tmp_path / "x")


def test_the_summary_branch_reads_recent_mean_mean_max_min_and_spread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from faultprint.encoder.tower import WindowSummary

    windows = np.arange(2 * 30 * 3, dtype=np.float32).reshape(2, 30, 3)
    out = np.asarray(WindowSummary(10)(windows))
    expected = np.concatenate([windows[:, -10:].mean(1), windows.mean(1), windows.max(1), windows.min(1),
                               windows.std(1)], axis=1)  # fmt: skip
    assert np.allclose(out, expected, rtol=1e-5)
    config = TowerConfig(steps=30, features=3, lstm_units=(4, 4), dense_units=8, embedding_size=3,
                         summary_units=6, network_baseline=True)  # fmt: skip
    tower = build_tower(config)
    assert tower.get_layer("summary_dense").units == 6
    tower.save(tmp_path / "t.keras")
    import keras

    back = keras.saving.load_model(tmp_path / "t.keras", compile=False)
    assert np.allclose(back.predict(windows, verbose=0), tower.predict(windows, verbose=0), atol=1e-6)
    assert TowerConfig.from_dict(config.to_dict()) == config


def test_the_summary_branch_can_read_the_newest_minutes_mean_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import keras
    import numpy as np

    from faultprint.encoder.tower import WindowSummary

    windows = np.arange(2 * 30 * 3, dtype=np.float32).reshape(2, 30, 3)
    out = np.asarray(WindowSummary(10, newest_minutes=4)(windows))
    assert out.shape == (2, 18)
    assert np.allclose(out[:, :3], windows[:, -4:].mean(1))
    assert np.allclose(out[:, 3:], WindowSummary(10)(windows))
    config = TowerConfig(steps=30, features=3, lstm_units=(4, 4), dense_units=8, embedding_size=3,
                         summary_units=6, summary_newest_minutes=4, network_baseline=True)  # fmt: skip
    tower = build_tower(config)
    tower.save(tmp_path / "t.keras")
    back = keras.saving.load_model(tmp_path / "t.keras", compile=False)
    assert np.allclose(back.predict(windows, verbose=0), tower.predict(windows, verbose=0), atol=1e-6)
    older = {k: v for k, v in config.to_dict().items() if k != "summary_newest_minutes"}
    assert TowerConfig.from_dict(older).summary_newest_minutes == 0  # a model trained without it
    with pytest.raises(ValueError, match="summary_newest_minutes"):
        TowerConfig(steps=30, summary_units=6, summary_newest_minutes=31)
    with pytest.raises(ValueError, match="needs summary_units"):
        TowerConfig(steps=30, summary_newest_minutes=4)
