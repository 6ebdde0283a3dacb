"""Hot-swap benchmark (`make bench-swap`): a model version is promoted while probes keep sending.

For each encoder size: a server process follows the registry and serves v1; simulated
probes (load_generator.py, in its own process) keep a closed-loop load on it; after a
steady period v2 is published and promoted through the registry, exactly as
``faultprint-trainer promote`` does, and the server loads, warms and re-embeds v2 and
swaps while the load goes on, for as long as that takes up to a bound per encoder
(LOADS); the load ends a few seconds after the swap. Every call is recorded with the
version that answered it.

Figures: failed calls over the whole run (the bar: none), p99 latency of the calls
that finished in the steady period and of those that finished during the swap (from
the promotion until the first answer by v2, plus the release of v1's memory), and
their ratio (the bar: at most 2). Writes benchmarks/results/swap.json and swap.md.
Needs REDIS_URL (the Makefile wraps it in scripts/with-redis.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.suite import PLANS, ModelPlan, _delete_keys, build_artifact, enrol, log, machine  # noqa: E402

# Seconds after v2's first answer that still count as the swap: the server releases v1's
# memory (one garbage collection) about 2 s after the switch.
SETTLE_S = 3.0
# Seconds of load kept on v2 after that, then the load generator is told to stop.
AFTER_S = 5.0
# Load per encoder: closed-loop probes, call mode, steady seconds, and the longest the swap
# may take. The swap runs at the serving threads' leftovers, so on a slow, busy machine it
# takes minutes (the original encoder's took 91-111 s on one, against 27 s on another).
LOADS = {"original": (16, "stream", 15.0, 180.0), "small": (16, "stream", 15.0, 60.0)}
WARMUP_S = 3.0


def serving_version(target: str) -> str:
    from faultprint.client import FaultprintClient

    with FaultprintClient(target) as client:
        return str(client.model_info().model_version)


def run_swap(plan: ModelPlan, root: Path) -> dict[str, Any]:
    import redis

    from benchmarks.launcher import ServerProcess
    from faultprint.registry.layout import RedisLayout
    from faultprint.registry.models import promote, publish_artifact, store_artifact

    concurrency, mode, steady_s, swap_s = LOADS[plan.name]
    v1_dir, v2_dir = (build_artifact(plan, root, seed, f"swap-{plan.name}-v{seed}-{uuid.uuid4().hex[:4]}")
                      for seed in (1, 2))  # fmt: skip
    prefix = f"faultprint-swap-{uuid.uuid4().hex[:8]}"
    layout = RedisLayout(prefix)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    publish_artifact(client, layout, v1_dir)
    store_artifact(client, layout, v2_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    flags = {"model-source": "redis", "redis-prefix": prefix, **plan.server_flags}
    record = root / f"calls-{plan.name}.json"
    try:
        with open(RESULTS / f"swap-{plan.name}-server.log", "w") as server_log, \
                ServerProcess(flags, env, server_log) as server:  # fmt: skip
            enrol(server.target)
            load = subprocess.Popen(
                [sys.executable, str(HERE / "load_generator.py"), "--target", server.target, "--mode", mode,
                 "--concurrency", str(concurrency), "--warmup-s", str(WARMUP_S),
                 "--duration-s", str(steady_s + swap_s + SETTLE_S + AFTER_S), "--record", str(record)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(WARMUP_S + steady_s)
            promoted_at = time.time()
            promote(client, layout, v2_dir.name)
            log(f"{plan.name}: promoted {v2_dir.name} under load")
            while serving_version(server.target) != v2_dir.name and time.time() - promoted_at < swap_s:
                time.sleep(0.1)
            # The load goes on while v1's memory is released and a little after, then ends;
            # a swap that never came ends with the generator's own duration.
            if time.time() - promoted_at < swap_s:
                time.sleep(SETTLE_S + AFTER_S)
                load.send_signal(signal.SIGTERM)
            load.communicate(timeout=swap_s + 120)
    finally:
        _delete_keys(prefix)
        client.close()
    calls = json.loads(record.read_text())
    return summarise(plan, calls, promoted_at, v1_dir.name, v2_dir.name, concurrency, mode)


def summarise(plan: ModelPlan, calls: list[list[Any]], promoted_at: float, v1: str, v2: str,
              concurrency: int, mode: str) -> dict[str, Any]:  # fmt: skip
    finished = np.array([c[0] for c in calls])
    latency = np.array([c[1] for c in calls])
    ok = np.array([c[2] == "OK" for c in calls])
    version = np.array([c[3] for c in calls])
    started = finished.min() + WARMUP_S
    by_v2 = finished[(version == v2) & ok]
    swap_finished = bool(len(by_v2))
    first_v2 = float(by_v2.min()) if swap_finished else float("nan")
    steady = (finished >= started) & (finished < promoted_at) & ok
    swap = (finished >= promoted_at) & (finished <= first_v2 + SETTLE_S) & ok
    after = (finished > first_v2 + SETTLE_S) & ok
    measured = finished >= started

    # A swap that did not finish while the load ran leaves no swap window: its figures are
    # NaN and the run fails, rather than the report breaking.
    def percentile(mask: np.ndarray, q: float) -> float:
        return float(np.percentile(latency[mask], q)) if mask.any() else float("nan")

    def p99(mask: np.ndarray) -> float:
        return percentile(mask, 99)

    def rate(mask: np.ndarray) -> float:
        span = finished[mask].max() - finished[mask].min() if mask.sum() > 1 else 0.0
        return float(mask.sum() / span) if span else float("nan")

    names, counts = np.unique(np.array([c[2] for c in calls])[measured], return_counts=True)
    failed = {str(o): int(n) for o, n in zip(names, counts, strict=True) if o != "OK"}
    v1_after_v2 = int(((version == v1) & (finished > first_v2 + 1.0)).sum())
    return {
        "model": plan.name,
        "load": {"concurrency": concurrency, "mode": mode},
        "calls": int(measured.sum()),
        "failed": failed,
        "swap_s": first_v2 - promoted_at,
        "steady": {"calls": int(steady.sum()), "p50_ms": percentile(steady, 50),
                   "p99_ms": p99(steady), "windows_per_s": rate(steady)},
        "swap": {"calls": int(swap.sum()), "p50_ms": percentile(swap, 50),
                 "p99_ms": p99(swap), "max_ms": percentile(swap, 100), "windows_per_s": rate(swap)},
        "after": {"calls": int(after.sum()), "p99_ms": p99(after)},
        "p99_ratio": p99(swap) / p99(steady),
        "answers_by_version": {v1: int((version == v1).sum()), v2: int((version == v2).sum())},
        "v1_answers_after_switch": v1_after_v2,
        "swap_finished": swap_finished,
        "passes": swap_finished and not failed and p99(swap) <= 2 * p99(steady),
    }  # fmt: skip


def markdown(results: list[dict[str, Any]], host: dict[str, Any]) -> str:
    lines = [
        "# Hot-swap under load",
        "",
        f"Machine: {host['platform']}, {host['cpus']} CPUs, GPUs: {host['gpus'] or 'none'}, {host['date']}; "
        "the load generator and the server share the cores. "
        f"Generated by `make bench-swap`.",
        "",
        "| encoder | load | calls | failed | swap took | steady p99 | swap p99 | ratio (≤ 2) | swap max |"
        " steady / swap windows/s | |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | C={r['load']['concurrency']} {r['load']['mode']} | {r['calls']} | "
            f"{sum(r['failed'].values())} | {_took(r)} | {r['steady']['p99_ms']:.1f} ms | "
            f"{r['swap']['p99_ms']:.1f} ms | {r['p99_ratio']:.2f} | {r['swap']['max_ms']:.0f} ms | "
            f"{r['steady']['windows_per_s']:.0f} / {r['swap']['windows_per_s']:.0f} | "
            f"{'PASS' if r['passes'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def _took(result: dict[str, Any]) -> str:
    if not result["swap_finished"]:
        return f"not within {LOADS[result['model']][3]:.0f} s"
    return f"{result['swap_s']:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="original,small")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="faultprint-swap-") as tmp:
        for name in args.models.split(","):
            results.append(run_swap(PLANS[name], Path(tmp)))
            log(json.dumps(results[-1]))
    host = machine()
    (RESULTS / "swap.json").write_text(json.dumps({"machine": host, "results": results}, indent=2))
    table = markdown(results, host)
    (RESULTS / "swap.md").write_text(table)
    print(table)
    return 0 if all(r["passes"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
