"""The whole path: train a tiny encoder, publish it, serve it, enrol ONE window per condition on a
network the model never saw, and diagnose held-out windows from simulated probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faultprint.client.client import AsyncFaultprintClient
from faultprint.client.probe import ProbeOptions, enrol_one_per_condition, run_probes
from faultprint.registry.connection import connect
from faultprint.registry.layout import RedisLayout
from faultprint.registry.models import publish_artifact
from faultprint.traffic.simulator import PROFILES, simulate_windows
from faultprint.trainer.config import PRESETS
from faultprint.trainer.evaluation import BASELINE, EvaluationOptions, evaluate_tower, report_markdown
from faultprint.trainer.export import export
from faultprint.trainer.training import train

pytestmark = pytest.mark.e2e

UNSEEN = "island-apac"


async def test_one_shot_diagnosis_on_an_unseen_network_is_at_least_95_percent(  # type: ignore[no-untyped-def]
    start_server, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    config = PRESETS["tiny"]
    assert UNSEEN not in config.networks
    parts = [
        simulate_windows(PROFILES[n], config.conditions, config.windows_per_condition, config.seed + i)
        for i, n in enumerate(config.networks)
    ]
    result = train(config, np.concatenate([w for w, _ in parts]), np.concatenate([lab for _, lab in parts]))
    # The offline evaluation on the same unseen network: the model earns its place over raw 1-NN.
    options = EvaluationOptions(network=UNSEEN, trials=3)
    report, _ = evaluate_tower(result.tower, result.distance_threshold, config.conditions, options,
                               config.tower.steps)  # fmt: skip
    assert report.headline() >= 0.95
    assert report.headline() > report.headline(BASELINE) + 0.1, report_markdown(report, "tiny")
    artifact = export(result, config, tmp_path / "artifacts", evaluation=report.to_dict())
    publish_artifact(connect(redis_url), RedisLayout(redis_prefix), artifact)

    server, target = await start_server(model_source="redis", xla="auto")
    assert server.host.current.version == artifact.name
    import asyncio

    await asyncio.to_thread(enrol_one_per_condition, target, UNSEEN, config.conditions, 101)
    options = ProbeOptions(
        target=target, network=UNSEEN, agents=4, windows_per_agent=30,
        conditions=config.conditions, seed=202, verbose=False,
    )  # fmt: skip
    tally = await run_probes(options)
    print(tally.table())
    assert tally.total == 120
    assert tally.accuracy >= 0.95, tally.table()
    async with AsyncFaultprintClient(target) as client:
        assert (await client.model_info()).model_version == artifact.name
