"""What reading a batch against its networks' baselines costs beside the encoder it feeds.

A model that reads network baselines has each batch normalised in place before the encoder
(server/batching/session.py read_against_baselines). For each batch size this times, in the
same run and on the same windows, that normalisation (one core, numpy) and a forward pass of
an untrained tower of the transfer preset's sizes (plain traced graph, every core), and
reports microseconds per window and their ratio. Median of --repeats; results go to
benchmarks/results/baseline-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from faultprint.traffic.baseline import NetworkBaseline, normalise
from faultprint.trainer.config import PRESETS

RESULTS = Path(__file__).resolve().parent / "results" / "baseline-cost.json"


def _median_s(run, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,32,256", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    import tensorflow as tf

    from faultprint.encoder.tower import build_tower

    config = PRESETS["transfer"].tower
    tower = build_tower(config)
    graph = tf.function(lambda x: tower(x, training=False))
    rng = np.random.default_rng(0)
    windows = rng.poisson(100, (max(map(int, args.sizes.split(","))), config.steps, config.features))
    windows = windows.astype(np.float32)
    baseline = NetworkBaseline.fit(windows[:8])
    rows = []
    for size in map(int, args.sizes.split(",")):
        batch = windows[:size].copy()
        centre = np.broadcast_to(baseline.centre, (size, 1, config.features)).copy()
        scale = np.broadcast_to(baseline.scale, (size, 1, config.features)).copy()
        read_s = _median_s(
            lambda b=batch, c=centre, s=scale: normalise(b.copy(), c, s, in_place=True), args.repeats
        )
        copy_s = _median_s(lambda b=batch: b.copy(), args.repeats)
        graph(batch)
        encode_s = _median_s(lambda b=batch: graph(b).numpy(), args.repeats)
        per_window = {"read_us": (read_s - copy_s) / size * 1e6, "encode_us": encode_s / size * 1e6}
        rows.append({"batch": size, **per_window, "ratio": per_window["read_us"] / per_window["encode_us"]})
        read_us, encode_us = per_window["read_us"], per_window["encode_us"]
        print(f"batch {size:>4}: read against baseline {read_us:6.1f} us/window, "
              f"transfer encoder {encode_us:7.1f} us/window, ratio {rows[-1]['ratio']:.3f}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                   "cpus": os.cpu_count(), "rows": rows}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
