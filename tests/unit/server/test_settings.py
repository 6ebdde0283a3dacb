"""Server settings: flags over environment over defaults, and clear start-up errors."""

from __future__ import annotations

import pytest

from faultprint.server.model.runner import RunnerOptions
from faultprint.server.settings import ServerSettings, SettingsError


def test_flags_override_environment_and_defaults() -> None:
    env = {
        "FAULTPRINT_MAX_BATCH_SIZE": "32",
        "REDIS_URL": "redis://r:6379/2",
        "FAULTPRINT_MAX_QUEUE_DELAY_MS": "1.5",
    }
    settings = ServerSettings.from_args(["--max-batch-size", "16", "--allowed-batch-sizes", "1,4,16"], env)
    assert settings.max_batch_size == 16
    assert settings.allowed_batch_sizes == (1, 4, 16)
    assert settings.max_queue_delay_ms == 1.5
    assert settings.redis_url == "redis://r:6379/2"
    assert settings.batch_options().padded_size(3) == 4


def test_the_arrival_gap_is_automatic_unless_set() -> None:
    assert ServerSettings.from_args([], {}).batch_options().arrival_gap_ms is None
    assert ServerSettings.from_args(["--arrival-gap-ms", "auto"], {}).arrival_gap_ms is None
    assert (
        ServerSettings.from_args([], {"FAULTPRINT_ARRIVAL_GAP_MS": "7.5"}).batch_options().arrival_gap_ms
        == 7.5
    )


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
