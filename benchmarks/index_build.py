"""How long a replica takes to index a network of many reference cases, and to match against it.

Start-up, every Redis reconnect and every model swap read a network's cases from Redis
and build its index (ModelHost.reload_references). For each network size this stores
that many one-window cases, with their embeddings under the serving version, in a real
Redis, then times:
- ``reload_s``: reload_references, from Redis to a built index (what a replica waits
  before it serves);
- ``one_put_per_case_s``: the same cases put into an index one at a time, as a run of
  single enrolments does (each rebuilds the network's matrix), up to --per-case-max cases;
- ``match_ms``: one batch of 64 embeddings matched against the network.
The encoder does not run (embeddings are stored), so a test-size artifact is used; a
window is 60 x 8 so that 50,000 cases fit in Redis in seconds. Results go to
benchmarks/results/index-build.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from faultprint.registry.connection import connect, connect_async, delete_deployment
from faultprint.registry.layout import RedisLayout
from faultprint.server.model.host import ModelHost, ServingState
from faultprint.server.model.runner import ModelRunner
from faultprint.server.references.index import CaseEmbeddings, ReferenceIndex
from faultprint.server.references.store import ReferenceStore

NETWORK = "bench-net"
LABELS = ("normal", "hss_unreachable", "link_at_capacity", "dns_failure")
# Cases stored per round of concurrent create calls (each holds a pooled connection).
_STORE_ROUND = 64


def _artifact(out: Path) -> Path:
    from faultprint.encoder.tower import TowerConfig
    from faultprint.traffic.catalogue import WINDOW_STEPS
    from faultprint.trainer.export import export_untrained

    config = TowerConfig(WINDOW_STEPS, 8, (8, 8), 16, 16)
    return export_untrained(
        config, out, seed=0, distance_threshold=1.0, version=f"bench-{uuid.uuid4().hex[:6]}"
    )


async def _fill(store: ReferenceStore, runner: ModelRunner, cases: int, rng: np.random.Generator) -> None:
    meta = runner.metadata
    for start in range(0, cases, _STORE_ROUND):
        count = min(_STORE_ROUND, cases - start)
        windows = rng.normal(size=(count, 1, meta.steps, meta.features)).astype(np.float32)
        embeddings = rng.normal(size=(count, 1, meta.embedding_size)).astype(np.float32)
        await asyncio.gather(
            *(
                store.create(
                    NETWORK,
                    f"c{start + i:06d}",
                    LABELS[(start + i) % len(LABELS)],
                    "",
                    windows[i],
                    meta.version,
                    embeddings[i],
                )
                for i in range(count)
            )
        )


def _one_put_per_case(state: ServingState) -> float:
    network = state.index.get(NETWORK)
    assert network is not None
    index = ReferenceIndex(state.version)
    started = time.perf_counter()
    for case in network.cases:
        index.put(NETWORK, CaseEmbeddings(case.case_id, case.label, case.embeddings))
    return time.perf_counter() - started


def _match_ms(state: ServingState, rng: np.random.Generator) -> float:
    network = state.index.get(NETWORK)
    assert network is not None
    queries = rng.normal(size=(64, state.runner.metadata.embedding_size)).astype(np.float32)
    network.match_many(queries, [3] * 64, 1.0)  # first call: allocation
    started = time.perf_counter()
    for _ in range(5):
        network.match_many(queries, [3] * 64, 1.0)
    return (time.perf_counter() - started) / 5 * 1000


async def measure(redis_url: str, sizes: list[int], per_case_max: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runner = ModelRunner(_artifact(Path(tmp)))
        for cases in sizes:
            client = await connect_async(redis_url)
            layout = RedisLayout(f"fpbench-{uuid.uuid4().hex[:8]}")
            store = ReferenceStore(client, layout, origin="bench")
            try:
                await _fill(store, runner, cases, rng)
                host = ModelHost(store, warm_batch_sizes=(1,))
                host.current = ServingState((runner,), ReferenceIndex(runner.version))
                started = time.perf_counter()
                await host.reload_references()
                row = {"cases": cases, "reload_s": time.perf_counter() - started}
                state = host.current
                assert host.holdings() == (1, cases)
                row["match_ms"] = _match_ms(state, rng)
                if cases <= per_case_max:
                    row["one_put_per_case_s"] = _one_put_per_case(state)
                host.close()
                rows.append(row)
                print(json.dumps(row), flush=True)
            finally:
                with connect(redis_url) as cleaner:
                    delete_deployment(cleaner, layout)
                await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--sizes", default="1000,2000,4000,8000,10000,50000", help="cases per network")
    parser.add_argument("--per-case-max", type=int, default=4000, help="largest size timed one put per case")
    parser.add_argument("--out", default="benchmarks/results/index-build.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = asyncio.run(measure(args.redis_url, sizes, args.per_case_max))
    report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| cases | reload s | one put per case s | match 64 ms |\n|---:|---:|---:|---:|")
    for r in rows:
        per_case = f"{r['one_put_per_case_s']:.2f}" if "one_put_per_case_s" in r else "-"
        print(f"| {r['cases']} | {r['reload_s']:.2f} | {per_case} | {r['match_ms']:.2f} |")


if __name__ == "__main__":
    main()
