"""The standard OTEL_* variables decide what the server's telemetry is called and how often it is sent."""

from __future__ import annotations

import pytest

from faultprint.server import telemetry


def test_otel_service_name_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    resource = telemetry._resource("faultprint-server")
    assert resource.attributes["service.name"] == "faultprint-server"
    assert resource.attributes["deployment.environment"] == "staging"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "faultprint-eu-1")
    assert telemetry._resource("faultprint-server").attributes["service.name"] == "faultprint-eu-1"


def test_the_export_interval_is_otel_metric_export_interval_or_ten_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_METRIC_EXPORT_INTERVAL", raising=False)
    assert telemetry.export_interval_ms() == 10_000
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "2500")
    assert telemetry.export_interval_ms() == 2500
