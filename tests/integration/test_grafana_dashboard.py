"""The Grafana dashboard is a well-formed dashboard, and every series it queries is one a real server exports."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.launcher import ROOT, ServerProcess, free_port
from faultprint.client import FaultprintClient

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "deploy" / "grafana" / "faultprint.json"
# Series by a label whose values come with events (an incident's label): none before the first.
ABSENT_UNTIL_FIRST_EVENT = {"faultprint_incidents_open_by_label"}

# What Grafana needs of a dashboard it imports (its dashboard model, schemaVersion 36 and up),
# as far as this one uses it.
_TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": {"type": "string", "minLength": 1},
    },
}
_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
SCHEMA = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer"},
                    "type": {"enum": ["row", "timeseries", "stat", "table", "gauge", "bargauge"]},
                    "gridPos": _GRID,
                    "targets": {"type": "array", "items": _TARGET},
                },
                "if": {"properties": {"type": {"not": {"const": "row"}}}},
                "then": {"required": ["targets", "datasource"], "properties": {"targets": {"minItems": 1}}},
            },
        },
    },
}


def _dashboard() -> dict:  # type: ignore[type-arg]
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    dashboard = _dashboard()
    jsonschema.validate(dashboard, SCHEMA)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used - variables)
    cells = [
        (x, y) for p in panels for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]  # fmt: skip
    assert len(cells) == len(set(cells)), "panels overlap"
    titles = {p["title"] for p in panels if p["type"] == "row"}
    assert {"Batcher", "Minute streams and incidents", "Model versions"} <= titles


def _queried_series(dashboard: dict) -> set[str]:  # type: ignore[type-arg]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return {name for expr in exprs for name in re.findall(r"([a-z_:][a-z0-9_:]*)\{", expr)}


def test_every_series_the_dashboard_queries_is_exported_by_a_real_server(
    artifact: Path, redis_url: str, redis_prefix: str, tmp_path: Path, windows
) -> None:  # type: ignore[no-untyped-def]
    metrics_address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "REDIS_URL": redis_url, "FAULTPRINT_REDIS_PREFIX": redis_prefix}
    flags = {"model-source": artifact, "xla": "off", "telemetry-exporter": "prometheus",
             "metrics-address": metrics_address}  # fmt: skip
    with (tmp_path / "server.log").open("w") as log, ServerProcess(flags, env, log) as server:
        with FaultprintClient(server.target) as client:
            client.create_reference_case("net-g", "normal", [windows("normal", 1)[0]])
            client.classify("net-g", "pcscf-1", windows("normal", 1, seed=1)[0])
        # Periodic series (the event loop's lag, probed every 0.1 s) appear with their first
        # probe: scrape until every queried series is there, for 10 s at most.
        queried = _queried_series(_dashboard()) - ABSENT_UNTIL_FIRST_EVENT
        deadline = time.monotonic() + 10
        while True:
            text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5).read().decode()
            parsed = [s for family in text_string_to_metric_families(text) for s in family.samples]
            missing = queried - {s.name for s in parsed}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert not missing, f"the dashboard queries series the server does not export: {sorted(missing)}"
    rejected = {s.labels["reason"]: s.value for s in parsed if s.name == "faultprint_requests_rejected_total"}
    assert rejected["queue_full"] == 0  # present before any refusal
