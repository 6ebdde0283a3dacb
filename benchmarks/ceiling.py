"""The encoder's ceiling: windows/s of the tower alone, in process, at each batch size, no RPC.

With the server's xla=auto on a CPU, each batch size is timed with the plain and the
XLA-compiled graph and the faster counts, as a server keeps the faster per size.
Weights do not change the cost of a forward pass, so untrained towers of the two sizes that
matter are timed: the original design (2 x LSTM-512) and the small one (LSTM-64). Results
go to benchmarks/results/ceiling.json and are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from server.model_runner import XLA_MODES

SIZES = {"original": ((512, 512), 512, 10), "small": ((64, 64), 64, 10)}


def measure(model: str, sizes: list[int], seconds: float, graphs: tuple[bool, ...]) -> list[dict[str, Any]]:
    """Windows/s at each batch size; with two candidate graphs (plain, XLA), the faster one's."""
    from encoder.tower import TowerConfig, build_tower
    from server.model_runner import encoder_function
    from trainer.features import NUM_FEATURES, WINDOW_STEPS

    lstm, dense, emb = SIZES[model]
    tower = build_tower(TowerConfig(WINDOW_STEPS, NUM_FEATURES, lstm, dense, emb))
    embeds = {xla: encoder_function(tower, WINDOW_STEPS, NUM_FEATURES, xla) for xla in graphs}
    rows = []
    for batch in sizes:
        x = np.random.default_rng(0).random((batch, WINDOW_STEPS, NUM_FEATURES), dtype=np.float32)
        row = max((time_graph(embeds[xla], x, seconds) | {"xla": xla} for xla in graphs),
                  key=lambda r: r["windows_per_s"])  # fmt: skip
        rows.append({"model": model, "batch_size": batch, **row})
        print(f"{model:9} batch {batch:5}: {row['windows_per_s']:9.1f} windows/s, "
              f"{row['ms_per_batch']:8.2f} ms/batch{' (XLA)' if row['xla'] else ''}", flush=True)  # fmt: skip
    return rows


def time_graph(embed: Any, x: np.ndarray, seconds: float) -> dict[str, float]:
    embed(x).numpy()  # trace, compile
    durations, started = [], time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or len(durations) < 3:
        call_started = time.perf_counter()
        embed(x).numpy()
        durations.append(time.perf_counter() - call_started)
    return {"windows_per_s": len(durations) * len(x) / elapsed,
            "ms_per_batch": 1000 * elapsed / len(durations),
            "p99_ms_per_batch": 1000 * float(np.percentile(durations, 99))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="small,original")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per batch size")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="as the server setting (0: default)")
    parser.add_argument("--xla", default="auto", choices=XLA_MODES, help="as the server setting")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ceiling.json"))
    args = parser.parse_args()
    import tensorflow as tf

    from server.devices import configure_threads
    from server.model_runner import RunnerOptions

    configure_threads(args.intra_op_threads)
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    graphs = RunnerOptions(xla=args.xla).graphs("/GPU:0" if gpus else "/CPU:0")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rows = [r for m in args.models.split(",") for r in measure(m, sizes, args.seconds, graphs)]
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
               "gpus": gpus, "intra_op_threads": args.intra_op_threads, "xla": args.xla}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    print(f"\nmachine: {machine}\n\n| model | batch | windows/s | ms/batch |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['batch_size']} | {r['windows_per_s']:.1f} | {r['ms_per_batch']:.2f} |")


if __name__ == "__main__":
    main()
