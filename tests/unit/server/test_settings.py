"""Server settings: flags over environment over defaults, and clear start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultprint.server.model.runner import RunnerOptions
from faultprint.server.settings import OPTIONS, ServerSettings, SettingsError, with_options_table

ROOT = Path(__file__).resolve().parents[3]


def test_flags_override_environment_and_defaults() -> None:
    env = {
        "FAULTPRINT_MAX_BATCH_SIZE": "32",
        "REDIS_URL": "redis://r:6379/2",
        "FAULTPRINT_MAX_QUEUE_DELAY_MS": "1.5",
    }
    settings = ServerSettings.from_args(["--max-batch-size", "16", "--allowed-batch-sizes", "1,4,16"], env)
    assert settings.batching.max_batch_size == 16
    assert settings.batching.allowed_batch_sizes == (1, 4, 16)
    assert settings.batching.max_queue_delay_ms == 1.5
    assert settings.redis_url == "redis://r:6379/2"
    assert settings.batching.padded_size(3) == 4


def test_the_arrival_gap_is_automatic_unless_set() -> None:
    assert ServerSettings.from_args([], {}).batching.arrival_gap_ms is None
    assert ServerSettings.from_args(["--arrival-gap-ms", "auto"], {}).batching.arrival_gap_ms is None
    assert ServerSettings.from_args([], {"FAULTPRINT_ARRIVAL_GAP_MS": "7.5"}).batching.arrival_gap_ms == 7.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-batch-size", "lots"], "max_batch_size='lots' is not a valid int"),
        (["--telemetry-exporter", "zipkin"], "telemetry_exporter is 'zipkin'"),
        (["--redis-url", "localhost:6379"], "must start with redis://"),
        (["--max-batch-size", "64", "--allowed-batch-sizes", "1,8"], "end at max_batch_size"),
        (["--listen-address", "50051"], "host:port"),
        (["--answer-margin-ms", "-5"], "answer_margin_ms must be >= 0"),
        (["--arrival-gap-ms", "soon"], "arrival_gap_ms='soon' .* use a number or auto"),
        (["--arrival-gap-ms", "-1"], "arrival_gap_ms must be >= 0"),
        (["--model-trusted-keys", "a.pem,,b.pem"], "model_trusted_keys 'a.pem,,b.pem' has an empty entry"),
    ],
)
def test_bad_values_fail_at_start_up_naming_the_setting(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ServerSettings.from_args(argv, {})


def test_xla_auto_chooses_between_graphs_on_cpus_and_keeps_cudnn_on_gpus() -> None:
    auto, on, off = (RunnerOptions(xla=mode) for mode in ("auto", "on", "off"))
    assert auto.graphs("/CPU:0") == (False, True) and auto.graphs("/GPU:0") == (False,)
    assert on.graphs("/CPU:0") == on.graphs("/physical_device:GPU:1") == (True,)
    assert off.graphs("/CPU:0") == off.graphs("/GPU:0") == (False,)
    with pytest.raises(SettingsError, match="xla"):
        ServerSettings.from_args(["--xla", "true"], env={})


def test_every_option_is_documented_once_and_the_docs_table_is_current() -> None:
    """Each option's help is the comment above its declaration; docs/configuration.md shows
    the table generated from them (`make docs` regenerates it)."""
    assert all(option.help for option in OPTIONS), [o.name for o in OPTIONS if not o.help]
    assert len({option.name for option in OPTIONS}) == len(OPTIONS)
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert with_options_table(doc) == doc, "docs/configuration.md is stale: run `make docs`"


def test_help_shows_each_option_with_its_default_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ServerSettings.from_args(["--help"], {})
    shown = " ".join(capsys.readouterr().out.split())
    assert "--shadow-sample-rate" in shown and "Variable: FAULTPRINT_SHADOW_SAMPLE_RATE." in shown
    assert "Largest number of requests in one encoder call. Default: 64." in shown


def test_flat_names_reach_the_component_that_declares_them() -> None:
    settings = ServerSettings.of(max_batch_size=8, xla="off", shadow_sample_rate=0.5, workers=2)
    assert (settings.batching.max_batch_size, settings.runner.xla, settings.shadow.sample_rate) == (
        8,
        "off",
        0.5,
    )
    assert settings.workers == 2
    with pytest.raises(SettingsError, match="unknown setting 'max_batch'"):
        ServerSettings.of(max_batch=8)
