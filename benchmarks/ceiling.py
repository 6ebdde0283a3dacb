"""The encoder's ceiling: windows/s of the tower alone, in process, at each batch size, no RPC.

With the server's xla=auto on a CPU, each batch size is timed with the plain and the
XLA-compiled graph and the faster counts, as a server keeps the faster per size.

A ceiling is what the machine can do, not what one caller gets out of it: on a CPU one
encoder call at a time leaves cores idle (the small encoder under XLA computes on one
thread), so each size is also timed with several instances computing at once, each a
replica on its own logical CPU device called from its own thread, as a server started
with ``--cpu-devices N`` runs them (``--instances 1,2``). The best layout counts. A row's
``ms_per_batch`` and ``p99_ms_per_batch`` stay those of one call alone: the latency a lone
request pays. Each batch goes in as the server hands it over: from an aligned buffer, which
a CPU encoder reads in place.

Weights do not change the cost of a forward pass, so untrained towers of the two sizes that
matter are timed: the original design (2 x LSTM-512) and the small one (LSTM-64); "tiny"
(LSTM-8) is the tests'. ``--precisions`` times each under the server's precisions (mixed ones
rebuild the tower as a server does). Each row names the cuDNN ops of the graph it timed: on a
GPU one CudnnRNNV3 per LSTM, where Keras took its fused kernel. Results go to
benchmarks/results/ceiling.json and are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script by suite.py

import numpy as np

from benchmarks.gpu_checks import cudnn_ops, loaded_cuda_versions, lstm_settings, tensorflow_facts
from faultprint.server.batching.assembly import aligned_zeros
from faultprint.server.model.runner import PRECISIONS, XLA_MODES, encoder_input, is_gpu

# Encoder sizes by name: LSTM units, dense units, embedding size.
SIZES = {"original": ((512, 512), 512, 10), "small": ((64, 64), 64, 10), "tiny": ((8, 8), 16, 10)}


def tower_config(model: str) -> Any:
    """The TowerConfig of a named encoder size."""
    from faultprint.encoder.tower import TowerConfig
    from faultprint.traffic.catalogue import NUM_FEATURES, WINDOW_STEPS

    lstm, dense, emb = SIZES[model]
    return TowerConfig(WINDOW_STEPS, NUM_FEATURES, lstm, dense, emb)


class Instances:
    """One traced encoder per device and graph, so concurrent callers share nothing but the machine."""

    def __init__(
        self, model: str, devices: list[str], graphs: tuple[bool, ...], precision: str = "float32"
    ) -> None:
        import tensorflow as tf

        from faultprint.encoder.tower import build_tower
        from faultprint.server.model.runner import encoder_function, rebuilt_tower

        config = tower_config(model)
        self.devices = devices
        self.embeds: list[dict[bool, Any]] = []
        for device in devices:
            with tf.device(device):
                # As a server's runner builds it: XLA on a GPU takes the LSTMs off cuDNN.
                cudnn = not (any(graphs) and is_gpu(device))
                tower = rebuilt_tower(build_tower(config), precision, cudnn=cudnn)
                self.embeds.append(
                    {xla: encoder_function(tower, config.steps, config.features, xla) for xla in graphs}
                )
        self.shape = (config.steps, config.features)

    def time(self, xla: bool, x: np.ndarray, count: int, seconds: float) -> dict[str, float]:
        """The first ``count`` instances called at once, each in a loop on its own thread, for ``seconds``."""
        import tensorflow as tf

        durations: list[list[float]] = [[] for _ in range(count)]
        barrier = threading.Barrier(count + 1)

        def call_in_loop(i: int) -> None:
            embed, device = self.embeds[i][xla], self.devices[i]
            with tf.device(device):
                embed(encoder_input(x, device)).numpy()  # trace, compile
                barrier.wait()
                stop = time.perf_counter() + seconds
                while time.perf_counter() < stop or len(durations[i]) < 3:
                    call_started = time.perf_counter()
                    embed(encoder_input(x, device)).numpy()
                    durations[i].append(time.perf_counter() - call_started)

        threads = [threading.Thread(target=call_in_loop, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        calls = np.concatenate([np.asarray(d) for d in durations])
        return {"windows_per_s": len(calls) * len(x) / elapsed,
                "ms_per_batch": 1000 * float(calls.mean()),
                "p99_ms_per_batch": 1000 * float(np.percentile(calls, 99))}  # fmt: skip


def measure(model: str, sizes: list[int], seconds: float, graphs: tuple[bool, ...], devices: list[str],
            layouts: list[int], precision: str = "float32") -> list[dict[str, Any]]:  # fmt: skip
    """Per batch size: windows/s of the best graph and layout (``layouts`` holds 1), and the
    latency of one call alone."""
    instances = Instances(model, devices[: max(layouts)], graphs, precision)
    rows = []
    for batch in sizes:
        x = aligned_zeros((batch, *instances.shape))  # as the server's batch buffers are
        x[...] = np.random.default_rng(0).random(x.shape, dtype=np.float32)
        timed = {(count, xla): instances.time(xla, x, count, seconds) for count in layouts for xla in graphs}
        (count, xla), best = max(timed.items(), key=lambda item: item[1]["windows_per_s"])
        alone = max((timed[(1, g)] for g in graphs), key=lambda r: r["windows_per_s"])
        by_layout = {n: max(timed[(n, g)]["windows_per_s"] for g in graphs) for n in layouts}
        rows.append({"model": model, "precision": precision, "batch_size": batch,
                     "windows_per_s": best["windows_per_s"],
                     "ms_per_batch": alone["ms_per_batch"], "p99_ms_per_batch": alone["p99_ms_per_batch"],
                     "xla": xla, "instances": count,
                     "windows_per_s_by_instances": {str(n): w for n, w in by_layout.items()},
                     "cudnn_ops": cudnn_ops(instances.embeds[0][xla])})  # fmt: skip
        layout = ", ".join(f"{n} at once {w:.1f}" for n, w in by_layout.items())
        graph = " (XLA)" if xla else ""
        print(f"{model:9} {precision:14} batch {batch:5}: {best['windows_per_s']:9.1f} windows/s "
              f"({layout}), {alone['ms_per_batch']:8.2f} ms/batch alone{graph}", flush=True)  # fmt: skip
    return rows


def devices_for(layouts: list[int]) -> tuple[list[str], list[int]]:
    """The devices and the layouts that fit them: with GPUs, one instance per GPU (layouts
    above the GPU count dropped); else the CPU split into as many logical devices as the
    largest layout. Before TensorFlow starts."""
    import tensorflow as tf

    from faultprint.server.model.devices import resolve_devices

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        layouts = [n for n in layouts if n <= len(gpus)]
    return resolve_devices("auto", 1 if gpus else max(layouts)), layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="small,original")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per batch size, graph and layout")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="as the server setting (0: default)")
    parser.add_argument("--xla", default="auto", choices=XLA_MODES, help="as the server setting")
    parser.add_argument(
        "--instances",
        default=f"1,{os.cpu_count() or 1}",
        help="layouts timed: encoder instances computing at once (default: 1 and one per core)",
    )
    parser.add_argument("--precisions", default="float32", help=f"comma list of {', '.join(PRECISIONS)}")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ceiling.json"))
    args = parser.parse_args()
    from faultprint.encoder.tower import build_tower
    from faultprint.server.model.devices import configure_threads
    from faultprint.server.model.runner import RunnerOptions

    configure_threads(args.intra_op_threads)
    # One call at a time is always timed: it gives each row the latency a lone request pays.
    devices, layouts = devices_for(sorted({1, *(int(n) for n in args.instances.split(","))}))
    gpus = [d for d in devices if "GPU" in d.upper()]
    graphs = RunnerOptions(xla=args.xla).graphs(devices[0])
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    models, precisions = args.models.split(","), args.precisions.split(",")
    rows = [
        r
        for m in models
        for p in precisions
        for r in measure(m, sizes, args.seconds, graphs, devices, layouts, p)
    ]
    facts = tensorflow_facts()
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": facts["tensorflow"],
               "gpus": gpus, "intra_op_threads": args.intra_op_threads, "xla": args.xla,
               "instances": layouts, "tensorflow_facts": facts,
               "loaded_cuda_versions": loaded_cuda_versions() if gpus else {}}  # fmt: skip
    # The LSTM settings Keras reads when it picks the kernel, per encoder size.
    lstms = {m: lstm_settings(build_tower(tower_config(m))) for m in models}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"machine": machine, "lstm_settings": lstms, "results": rows}, indent=2)
    )
    print(f"\nmachine: {machine}\n")
    print("| model | precision | batch | windows/s | instances | ms/batch alone | cuDNN ops |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['precision']} | {r['batch_size']} | {r['windows_per_s']:.1f} | "
              f"{r['instances']} | {r['ms_per_batch']:.2f} | {len(r['cudnn_ops'])} |")  # fmt: skip


if __name__ == "__main__":
    main()
