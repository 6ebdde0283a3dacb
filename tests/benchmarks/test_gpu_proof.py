"""The GPU proof's checks, and its CPU rehearsal end to end at the smallest size (no GPU needed)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from unittest import mock

import keras
import pytest

from benchmarks.ceiling import tower_config
from benchmarks.gpu_checks import cudnn_ops, lstm_settings
from benchmarks.gpu_proof import GpuProofOptions, gpu_requirement, listed_gpus, main
from benchmarks.options import options_from, parser_for
from benchmarks.suite import SuiteConfig
from faultprint.encoder.tower import build_tower
from faultprint.server.model.runner import encoder_function, rebuilt_tower

# What Keras asks, when an LSTM is traced, to choose its cuDNN kernel: whether TensorFlow lists a GPU.
KERAS_GPU_LISTED = "keras.src.backend.tensorflow.rnn._is_gpu_available"


def fake_nvidia_smi(folder: Path, output: str, code: int) -> Path:
    """A folder holding an nvidia-smi that prints output and exits with code, to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def test_the_towers_lstms_qualify_for_cudnn_and_other_settings_or_a_mask_do_not() -> None:
    settings = lstm_settings(build_tower(tower_config("tiny")))
    assert settings["eligible"] and settings["mask_sources"] == []
    assert [layer["layer"] for layer in settings["layers"]] == ["lstm_1", "lstm_2"]
    assert all(layer["problems"] == [] for layer in settings["layers"])

    inputs = keras.Input((60, 3))
    masked = keras.layers.Masking(name="pad")(inputs)
    x = keras.layers.LSTM(4, activation="relu", recurrent_dropout=0.1, return_sequences=True, name="a")(
        masked
    )
    x = keras.layers.LSTM(4, name="b")(x)
    settings = lstm_settings(keras.Model(inputs, x))
    assert not settings["eligible"] and settings["mask_sources"] == ["pad"]
    problems = {layer["layer"]: " ".join(layer["problems"]) for layer in settings["layers"]}
    assert "activation is 'relu'" in problems["a"] and "recurrent_dropout is 0.1" in problems["a"]
    assert "activation" not in problems["b"] and "masked (by pad)" in problems["b"]


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_the_graph_check_finds_one_cudnn_op_per_lstm_where_keras_takes_that_kernel(precision: str) -> None:
    """Tracing needs no GPU: Keras picks the kernel by whether TensorFlow lists one."""
    steps, features = 60, 129
    with mock.patch(KERAS_GPU_LISTED, return_value=True):
        tower = rebuilt_tower(build_tower(tower_config("tiny")), precision, cudnn=True)
        assert cudnn_ops(encoder_function(tower, steps, features, False)) == ["CudnnRNNV3", "CudnnRNNV3"]
        off = rebuilt_tower(build_tower(tower_config("tiny")), precision, cudnn=False)
        assert cudnn_ops(encoder_function(off, steps, features, False)) == []
    tower = rebuilt_tower(build_tower(tower_config("tiny")), precision, cudnn=True)
    assert cudnn_ops(encoder_function(tower, steps, features, False)) == []


def test_gpus_are_those_nvidia_smi_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'one', line, 0)}:{os.environ['PATH']}")
    assert listed_gpus() == ([line], "")
    monkeypatch.setenv(
        "PATH", f"{fake_nvidia_smi(tmp_path / 'none', 'No devices were found', 6)}:/nonexistent"
    )
    assert listed_gpus() == ([], "nvidia-smi -L lists no GPU (exit 6: No devices were found)")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert listed_gpus() == ([], "nvidia-smi not found")


def test_the_gpu_extra_is_pinned_to_the_tensorflow_installed() -> None:
    from importlib.metadata import version

    assert gpu_requirement() == f"tensorflow[and-cuda]=={version('tensorflow')}"


def test_options_come_from_flags_with_auto_for_the_sizes_left_to_the_device() -> None:
    parser = parser_for(GpuProofOptions, "")
    args = parser.parse_args(
        ["--batch-sizes", "4,8", "--ceiling-s", "auto", "--install", "false", "--point-s", "1.5"]
    )
    options = options_from(GpuProofOptions, args)
    assert options.batch_sizes == (4, 8) and options.ceiling_s is None and not options.install
    assert options.point_s == 1.5 and options.precisions == ("float32", "mixed_float16")
    assert options.sized(gpu=True).batch_sizes == (4, 8)
    assert GpuProofOptions().sized(gpu=True).batch_sizes == (256, 512, 1024)
    assert GpuProofOptions().sized(gpu=False).max_batch_size == 32
    with pytest.raises(ValueError, match="model 'huge'"):
        GpuProofOptions(model="huge")


def test_the_suite_runs_only_the_points_it_is_given() -> None:
    config = SuiteConfig.build(quick=False, models=["original"]).only_points([64, 256])
    assert config.concurrencies == [64, 256] and config.modes == ["unary", "stream"]
    assert config.naive_concurrencies == [] and config.overload_s == 0 and config.out_stem == "suite-points"
    assert config.point_s == 10.0 and config.ceiling_beside


@pytest.mark.timeout(120)
def test_a_cpu_rehearsal_skips_the_gpu_steps_with_reasons_and_measures_the_rest(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole proof at the smallest size: tiny encoder, batch 4, one short load point."""
    smi = fake_nvidia_smi(tmp_path / "bin", "No devices were found", 6)
    monkeypatch.setenv("PATH", f"{smi}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # and no GPU for TensorFlow, wherever this runs
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("CUDA_CACHE_MAXSIZE", raising=False)
    results = tmp_path / "results"
    code = main(["--model", "tiny", "--batch-sizes", "4", "--ceiling-s", "0.05", "--concurrencies", "4",
                 "--modes", "stream", "--point-s", "0.5", "--warmup-s", "0.2", "--max-batch-size", "4",
                 "--results-dir", str(results)])  # fmt: skip

    report = json.loads((results / "gpu-proof-rehearsal.json").read_text())
    steps = report["steps"]
    assert code == 0 and report["passed"] and report["mode"] == "rehearsal"
    assert "not GPU figures" in report["note"]
    # The GPU-only steps: skipped, each with its reason.
    assert steps["install"]["status"] == "skipped"
    assert "nvidia-smi -L lists no GPU" in steps["install"]["reason"]
    assert steps["cudnn_graph"]["status"] == "skipped" and "lists no GPU" in steps["cudnn_graph"]["reason"]
    assert steps["cudnn_graph"]["cudnn_ops_by_precision"] == {"float32": [], "mixed_float16": []}
    # The CPU-runnable steps: ran, with their figures.
    assert steps["environment"]["status"] == "ran" and steps["environment"]["gpus"] == []
    assert report["machine"]["tensorflow"] and report["machine"]["cuda_build"]
    assert steps["cudnn_settings"]["status"] == "ran" and steps["cudnn_settings"]["passed"]
    ceiling = steps["ceiling"]
    assert ceiling["status"] == "ran"
    assert {(r["precision"], r["batch_size"]) for r in ceiling["rows"]} == {
        ("float32", 4),
        ("mixed_float16", 4),
    }
    assert all(r["windows_per_s"] > 0 and r["ms_per_batch"] > 0 for r in ceiling["rows"])
    load = steps["load"]
    assert load["status"] == "ran" and load["server_flags"]["max-batch-size"] == "4"
    (point,) = load["points"]
    assert (point["mode"], point["concurrency"]) == ("stream", 4)
    assert point["windows_per_s"] > 0 and point["outcomes"].get("OK", 0) > 0 and point["mean_batch_size"] > 0
    assert point["x_ceiling"] > 0
    summary = (results / "gpu-proof-rehearsal.md").read_text()
    assert report["note"] in summary and "| install the gpu extra | skipped |" in summary


def test_a_gpu_that_tensorflow_cannot_use_fails_the_proof_without_a_cpu_run_in_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = fake_nvidia_smi(tmp_path / "bin", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)", 0)
    monkeypatch.setenv("PATH", f"{smi}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("CUDA_CACHE_MAXSIZE", raising=False)
    results = tmp_path / "results"
    assert main(["--install", "false", "--results-dir", str(results)]) == 1

    report = json.loads((results / "gpu-proof.json").read_text())
    steps = report["steps"]
    assert report["mode"] == "gpu" and not report["passed"] and report["note"] == ""
    assert steps["install"] == {"status": "skipped", "reason": "install is off (--install false)",
                                "nvidia_smi": ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"],
                                "wall_s": steps["install"]["wall_s"]}  # fmt: skip
    assert steps["environment"]["status"] == "failed"
    assert "nvidia-smi lists 1 GPU(s) and TensorFlow none" in steps["environment"]["error"]
    for name in ("ceiling", "cudnn_settings", "cudnn_graph", "load"):
        assert steps[name]["status"] == "skipped" and "nvidia-smi lists one" in steps[name]["reason"]
