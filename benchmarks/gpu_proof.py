"""Proves the encoder and its server on a GPU in one command, or rehearses the proof on a CPU."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib.metadata import requires, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ceiling import SIZES  # noqa: E402
from benchmarks.load_generator import NATIVE_GENERATOR  # noqa: E402
from benchmarks.options import parse_args  # noqa: E402
from benchmarks.suite import ModelPlan, SuiteConfig, build_artifact, log, serve_and_measure  # noqa: E402
from faultprint.server.model.runner import PRECISIONS  # noqa: E402

DESCRIPTION = """\
Steps, each reported as ran, skipped (with the reason) or failed:
1. install: where nvidia-smi lists a GPU, pip installs the gpu extra's tensorflow[and-cuda],
   pinned to the TensorFlow the venv has, which adds CUDA 12's wheels; elsewhere
   nothing is downloaded. pip reads PIP_NO_INDEX and PIP_FIND_LINKS for a wheelhouse.
2. environment: what TensorFlow sees (its own process): version, CUDA and cuDNN it was built
   with, the GPUs it lists. With none the rest is a CPU rehearsal at reduced sizes; a GPU that
   nvidia-smi lists and TensorFlow does not fails the proof, and the rest is skipped.
3. ceiling: benchmarks/ceiling.py at each batch size and precision, one encoder on one device.
4. cudnn_settings: the LSTM layers' settings against Keras' conditions for the cuDNN kernel.
5. cudnn_graph (GPU only): a CudnnRNN op per LSTM in the traced serving graph of each precision.
6. load: a server process with the proof's plan, and the suite's closed-loop points.
Writes benchmarks/results/gpu-proof.{json,md} (gpu-proof-rehearsal.* without a GPU). Needs
REDIS_URL (the Makefile wraps it in scripts/with-redis.sh).
"""

# On a GPU: the batch sizes its ceiling is read at; the server takes batches of up to 256,
# which C = 256 fills, padded to powers of two.
GPU_BATCH_SIZES = (256, 512, 1024)
GPU_MAX_BATCH_SIZE = 256
# In a CPU rehearsal: on two cores the original encoder took 111 ms per batch of 16 in float32
# and 230 ms under mixed_float16, so a batch of 1024 would take seconds per call.
REHEARSAL_BATCH_SIZES = (16, 32)
REHEARSAL_MAX_BATCH_SIZE = 32
# What the whole proof may take on a GPU, in seconds.
BUDGET_S = 480.0
# TensorFlow 2.21's wheel carries kernels for sm_60 to sm_89 and PTX for compute_90, so on a
# Hopper GPU the driver compiles the kernels it loads from PTX; a JIT cache this large (the
# most the driver takes, 4 GiB) keeps them for the server's process once the ceiling's
# process compiled them.
CUDA_CACHE_MAXSIZE = str(4 << 30)
NVIDIA_SMI = "nvidia-smi"
REHEARSAL_NOTE = (
    "CPU rehearsal: TensorFlow lists no GPU here. Every figure is from the CPU at reduced sizes: "
    "these are not GPU figures."
)


@dataclass(frozen=True)
class GpuProofOptions:
    """What the proof measures; sizes left to auto are the GPU's, or a CPU rehearsal's."""

    # Encoder timed and served: original (2 x LSTM-512), small (LSTM-64) or tiny (LSTM-8).
    model: str = "original"
    # Batch sizes the ceiling is timed at (none: 256,512,1024 on a GPU, 16,32 in a rehearsal).
    batch_sizes: tuple[int, ...] = ()
    # Precisions the ceiling is timed in: float32, mixed_float16, mixed_bfloat16.
    precisions: tuple[str, ...] = ("float32", "mixed_float16")
    # Seconds each ceiling row is timed for (auto: the suite's, 3 on a GPU, 0.5 in a rehearsal).
    ceiling_s: float | None = None
    # Closed-loop concurrencies of the load points.
    concurrencies: tuple[int, ...] = (64, 256)
    # Calls at each load point: unary, stream.
    modes: tuple[str, ...] = ("unary", "stream")
    # Measured seconds per load point (auto: the suite's, 10 on a GPU, 2.5 in a rehearsal).
    point_s: float | None = None
    # Warm-up seconds before each load point (auto: the suite's, 3 on a GPU, 1 in a rehearsal).
    warmup_s: float | None = None
    # The server's max batch size (0: 256 on a GPU, 32 in a rehearsal).
    max_batch_size: int = 0
    # The server's precision at the load points.
    server_precision: str = "float32"
    # Install the gpu extra's CUDA wheels where nvidia-smi lists a GPU.
    install: bool = True
    # Seconds the whole proof may take: a step not begun by then is skipped.
    budget_s: float = BUDGET_S
    # Folder of the results, relative to the repository's root.
    results_dir: str = "benchmarks/results"

    def __post_init__(self) -> None:
        problems = []
        if self.model not in SIZES:
            problems.append(f"model {self.model!r} is not one of {sorted(SIZES)}")
        problems += [
            f"precision {p!r} is not one of {PRECISIONS}" for p in self.precisions if p not in PRECISIONS
        ]
        if self.server_precision not in PRECISIONS:
            problems.append(f"server_precision {self.server_precision!r} is not one of {PRECISIONS}")
        problems += [f"mode {m!r} is not unary or stream" for m in self.modes if m not in ("unary", "stream")]
        if min((*self.batch_sizes, *self.concurrencies, 1)) < 1 or self.max_batch_size < 0:
            problems.append("batch sizes and concurrencies must be positive")
        if problems:
            raise ValueError("; ".join(problems))

    def sized(self, gpu: bool) -> GpuProofOptions:
        """These options with every auto size set: the GPU's, or a rehearsal's (the suite's
        full and quick timings)."""
        suite = SuiteConfig.build(quick=not gpu, models=[self.model])
        return replace(
            self,
            batch_sizes=self.batch_sizes or (GPU_BATCH_SIZES if gpu else REHEARSAL_BATCH_SIZES),
            ceiling_s=suite.ceiling_s if self.ceiling_s is None else self.ceiling_s,
            point_s=suite.point_s if self.point_s is None else self.point_s,
            warmup_s=suite.warmup_s if self.warmup_s is None else self.warmup_s,
            max_batch_size=self.max_batch_size or (GPU_MAX_BATCH_SIZE if gpu else REHEARSAL_MAX_BATCH_SIZE),
        )


class Budget:
    """The proof's wall-clock budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def left_s(self) -> float:
        return self.seconds - self.elapsed_s()


def ran(**details: Any) -> dict[str, Any]:
    return {"status": "ran", **details}


def skipped(reason: str, **details: Any) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, **details}


def failed(error: str, **details: Any) -> dict[str, Any]:
    return {"status": "failed", "error": error, **details}


def step(title: str, budget: Budget, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One step, unless the budget is spent; one that raises is reported failed and the proof
    goes on with the next."""
    if budget.left_s() <= 0:
        return skipped(f"the budget of {budget.seconds:.0f} s was spent before this step")
    log(f"gpu proof: {title}")
    started = time.monotonic()
    try:
        result = body()
    except Exception as exc:
        result = failed(f"{type(exc).__name__}: {exc}")
    result["wall_s"] = round(time.monotonic() - started, 1)
    if result["status"] != "ran":
        log(f"gpu proof: {title}: {result['status']}: {result.get('reason') or result.get('error')}")
    return result


def listed_gpus() -> tuple[list[str], str]:
    """The GPUs nvidia-smi lists (its lines), and, when it lists none, why."""
    path = shutil.which(NVIDIA_SMI)
    if not path:
        return [], f"{NVIDIA_SMI} not found"
    try:
        done = subprocess.run([path, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"{NVIDIA_SMI} -L failed: {exc}"
    gpus = [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU ")]
    if gpus:
        return gpus, ""
    said = (done.stdout + done.stderr).strip().splitlines()
    return [], f"{NVIDIA_SMI} -L lists no GPU (exit {done.returncode}: {said[-1] if said else 'no output'})"


def gpu_requirement() -> str:
    """The gpu extra's tensorflow[and-cuda] requirement, pinned to the TensorFlow installed when
    that satisfies it: pip then adds CUDA's wheels and leaves the project's own install as
    `make setup` made it."""
    from packaging.requirements import Requirement

    found = [Requirement(r) for r in requires("faultprint") or []]
    extra = next(
        r
        for r in found
        if r.name == "tensorflow" and r.marker is not None and r.marker.evaluate({"extra": "gpu"})
    )
    name = f"{extra.name}[{','.join(sorted(extra.extras))}]"
    installed = version("tensorflow")
    return f"{name}=={installed}" if extra.specifier.contains(installed) else f"{name}{extra.specifier}"


def install_extra(options: GpuProofOptions, budget: Budget, gpus: list[str], why_none: str) -> dict[str, Any]:
    """The gpu extra's CUDA wheels, where nvidia-smi lists GPUs (gpus; else why_none says why not)."""
    if not gpus:
        return skipped(f"{why_none}: CUDA's wheels are installed only where nvidia-smi lists a GPU")
    if not options.install:
        return skipped("install is off (--install false)", nvidia_smi=gpus)
    requirement = gpu_requirement()
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--timeout", "20", "--retries", "1", requirement]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=max(budget.left_s(), 60))
    details = {"requirement": requirement, "nvidia_smi": gpus}
    if done.returncode:
        return failed(f"pip exited with {done.returncode}: {_tail(done.stderr)}", **details)
    return ran(**details)


def read_environment(budget: Budget, listed: list[str]) -> dict[str, Any]:
    """What TensorFlow sees, from a process of its own (benchmarks/gpu_checks.py), so that this
    one holds no GPU memory when the server starts; failed where nvidia-smi listed GPUs and
    TensorFlow lists none, with its warnings about the CUDA libraries it could not load."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1"}  # warnings: "Cannot dlopen some GPU libraries"
    command = [sys.executable, str(HERE / "gpu_checks.py")]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=max(budget.left_s(), 60)
    )
    if done.returncode:
        raise RuntimeError(f"gpu_checks.py exited with {done.returncode}: {_tail(done.stderr)}")
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    if listed and not facts["gpus"]:
        said = [line.strip() for line in done.stderr.splitlines() if "dlopen" in line or "GPU" in line][-5:]
        warnings = " / ".join(said) or "no warning"
        return failed(f"nvidia-smi lists {len(listed)} GPU(s) and TensorFlow none: {warnings}", **facts)
    return ran(**facts)


def time_ceiling(options: GpuProofOptions, gpu: bool, budget: Budget) -> dict[str, Any]:
    """benchmarks/ceiling.py in its own process: one encoder on one device (the GPU, or one
    logical CPU device), each batch size in each precision. On a GPU xla=auto keeps cuDNN; a
    rehearsal runs the plain graph too (off), skipping XLA's compilations."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    command = [sys.executable, str(HERE / "ceiling.py"), "--models", options.model,
               "--batch-sizes", _commas(options.batch_sizes), "--precisions", _commas(options.precisions),
               "--seconds", str(options.ceiling_s), "--instances", "1", "--xla", "auto" if gpu else "off",
               "--out", str(out)]  # fmt: skip
    try:
        done = subprocess.run(
            command, cwd=ROOT, timeout=max(budget.left_s(), 60), capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"ceiling.py exited with {done.returncode}: {_tail(done.stderr)}")
        timed = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    keep = (
        "precision",
        "batch_size",
        "windows_per_s",
        "ms_per_batch",
        "p99_ms_per_batch",
        "xla",
        "cudnn_ops",
    )
    rows = [{k: row[k] for k in keep} for row in timed["results"]]
    for row in rows:
        log(f"ceiling {options.model} {row['precision']} batch {row['batch_size']}: "
            f"{row['windows_per_s']:.1f} windows/s, {row['ms_per_batch']:.2f} ms per batch, "
            f"cuDNN ops {len(row['cudnn_ops'])}")  # fmt: skip
    return ran(model=options.model, rows=rows, lstm_settings=timed["lstm_settings"][options.model],
               loaded_cuda_versions=timed["machine"].get("loaded_cuda_versions", {}))  # fmt: skip


def check_settings(ceiling: dict[str, Any]) -> dict[str, Any]:
    """The LSTM layers' settings (read in the ceiling's process) against Keras' conditions."""
    if ceiling["status"] != "ran":
        return failed("the ceiling's process, which reads the settings, gave no result")
    settings = ceiling["lstm_settings"]
    return ran(check="each LSTM layer's settings against Keras' conditions for the cuDNN kernel",
               passed=settings["eligible"], **settings)  # fmt: skip


def check_graph(ceiling: dict[str, Any], gpu: bool) -> dict[str, Any]:
    """At run time: one CudnnRNN op per LSTM in the graph of the serving function
    (runner.encoder_function, traced as a server traces it) that the ceiling timed, in every
    precision."""
    found = {row["precision"]: row["cudnn_ops"] for row in ceiling.get("rows", [])}
    if not gpu:
        return skipped(
            "TensorFlow lists no GPU, and Keras takes the cuDNN kernel only where it lists one when the "
            "layer is traced", cudnn_ops_by_precision=found,
        )  # fmt: skip
    if ceiling["status"] != "ran":
        return failed("the ceiling's process, which traces the graphs, gave no result")
    lstms = len(ceiling["lstm_settings"]["layers"])
    return ran(check="traced graph: a CudnnRNN op per LSTM in the serving function's graph",
               passed=bool(found) and all(len(ops) == lstms for ops in found.values()),
               lstm_layers=lstms, cudnn_ops_by_precision=found)  # fmt: skip


def server_plan(options: GpuProofOptions, gpu: bool) -> ModelPlan:
    """The server's settings at the load points: batches up to max_batch_size, padded to powers
    of two, the next batch staged while one computes (two in flight). On a GPU xla=auto keeps
    cuDNN; a rehearsal turns XLA off, sparing its compilation of each size at warm-up."""
    (lstm, _), dense, _ = SIZES[options.model]
    flags: dict[str, object] = {"max-batch-size": options.max_batch_size, "batches-in-flight": 2,
                                "max-queue-size": 4096, "precision": options.server_precision,
                                "xla": "auto" if gpu else "off"}  # fmt: skip
    return ModelPlan(options.model, lstm, dense, flags, overload_deadline_ms=1000.0)


def serve_points(options: GpuProofOptions, gpu: bool) -> dict[str, Any]:
    """The suite's closed-loop points against a real server process (suite.serve_and_measure);
    sent by the native generator where it is built (`make native-load`), else by the Python one."""
    plan = server_plan(options, gpu)
    suite = SuiteConfig.build(quick=not gpu, models=[plan.name]).only_points(list(options.concurrencies))
    generator = "native" if NATIVE_GENERATOR.exists() else "python"
    point_s, warmup_s = options.point_s, options.warmup_s
    assert point_s is not None and warmup_s is not None, "options.sized() sets them"
    config = replace(suite, modes=list(options.modes), point_s=point_s, warmup_s=warmup_s,
                     ceiling_beside=False, generator=generator)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        served = serve_and_measure(config, plan, artifact_on_cpu(plan, Path(tmp)), naive=False)
    keep = ("mode", "concurrency", "windows_per_s", "p50_ms", "p95_ms", "p99_ms", "outcomes",
            "mean_batch_size", "mean_compute_ms", "generator")  # fmt: skip
    return ran(server_flags={k: str(v) for k, v in plan.server_flags.items()}, generator=generator,
               points=[{k: p.get(k) for k in keep} for p in served["points"]])  # fmt: skip


def artifact_on_cpu(plan: ModelPlan, root: Path) -> Path:
    """The plan's untrained artifact, built with this process's TensorFlow kept off the GPUs,
    which the server's process takes."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # TensorFlow already started here: it keeps its devices
            tf.config.set_visible_devices([], "GPU")
    return build_artifact(plan, root)


def with_ceiling_ratios(load: dict[str, Any], ceiling: dict[str, Any], options: GpuProofOptions) -> None:
    """Each point's windows/s against the ceiling at the server's max batch size and precision."""
    row = next(
        (r for r in ceiling.get("rows", [])
         if r["batch_size"] == options.max_batch_size and r["precision"] == options.server_precision),
        None,
    )  # fmt: skip
    for point in load.get("points", []):
        point["x_ceiling"] = point["windows_per_s"] / row["windows_per_s"] if row else None


def machine(environment: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    facts = (
        "tensorflow",
        "keras",
        "cuda_build",
        "cudnn_build",
        "cuda_capabilities_built",
        "gpus",
        "cuda_wheels",
    )
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nvidia_smi": nvidia_smi_query(),
        **{k: environment.get(k) for k in facts},
        "loaded_cuda_versions": ceiling.get("loaded_cuda_versions", {}),
    }


def nvidia_smi_query() -> list[str]:
    """nvidia-smi's name, driver version and memory of each GPU; none without nvidia-smi."""
    path = shutil.which(NVIDIA_SMI)
    if not path:
        return []
    query = [path, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def prove(options: GpuProofOptions) -> dict[str, Any]:
    """Every step in turn; the report that gpu-proof.json holds."""
    budget = Budget(options.budget_s)
    os.environ.setdefault("CUDA_CACHE_MAXSIZE", CUDA_CACHE_MAXSIZE)
    listed, why_none = listed_gpus()
    steps: dict[str, dict[str, Any]] = {}
    steps["install"] = step(
        "install the gpu extra", budget, lambda: install_extra(options, budget, listed, why_none)
    )
    steps["environment"] = step("what TensorFlow sees", budget, lambda: read_environment(budget, listed))
    gpu = bool(steps["environment"].get("gpus"))
    options = options.sized(gpu)
    if listed and not gpu:
        reason = "TensorFlow lists no GPU where nvidia-smi lists one (the environment step says why)"
        steps.update({name: skipped(reason) for name in ("ceiling", "cudnn_settings", "cudnn_graph", "load")})
    else:
        steps["ceiling"] = step("the encoder's ceiling", budget, lambda: time_ceiling(options, gpu, budget))
        steps["cudnn_settings"] = check_settings(steps["ceiling"])
        steps["cudnn_graph"] = check_graph(steps["ceiling"], gpu)
        steps["load"] = step("load points against a server", budget, lambda: serve_points(options, gpu))
        with_ceiling_ratios(steps["load"], steps["ceiling"], options)
    wall_s = budget.elapsed_s()
    rehearsal = not (gpu or listed)
    return {
        "mode": "rehearsal" if rehearsal else "gpu",
        "note": REHEARSAL_NOTE if rehearsal else "",
        "passed": passed(steps, rehearsal),
        "wall_s": round(wall_s, 1),
        "budget_s": options.budget_s,
        "within_budget": wall_s <= options.budget_s,
        "machine": machine(steps["environment"], steps["ceiling"]),
        "options": asdict(options),
        "steps": steps,
    }


# The steps a proof on a GPU must run; a rehearsal may skip the GPU-only ones.
MEASURED_ON_A_GPU = ("environment", "ceiling", "cudnn_settings", "cudnn_graph", "load")


def passed(steps: dict[str, dict[str, Any]], rehearsal: bool) -> bool:
    """No step failed and every check passed; on a GPU, every measuring step ran."""
    ran_all = rehearsal or all(steps[name]["status"] == "ran" for name in MEASURED_ON_A_GPU)
    return ran_all and all(s["status"] != "failed" and s.get("passed", True) for s in steps.values())


def write_results(report: dict[str, Any], results_dir: Path) -> tuple[Path, str]:
    """Writes gpu-proof.{json,md} (gpu-proof-rehearsal.* for a rehearsal); the JSON's path and
    the markdown."""
    stem = results_dir / ("gpu-proof" if report["mode"] == "gpu" else "gpu-proof-rehearsal")
    results_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    return stem.with_suffix(".json"), text


STEP_TITLES = {
    "install": "install the gpu extra",
    "environment": "what TensorFlow sees",
    "ceiling": "encoder ceiling",
    "cudnn_settings": "cuDNN: LSTM settings",
    "cudnn_graph": "cuDNN: op in the traced graph",
    "load": "load points against a server",
}


def markdown(report: dict[str, Any]) -> str:
    m, steps, options = report["machine"], report["steps"], report["options"]
    verdict = "PASS" if report["passed"] else "FAIL"
    budget = "" if report["within_budget"] else ", OVER its budget"
    lines = ["# GPU proof (`make bench-gpu`)", ""]
    if report["note"]:
        lines += [f"**{report['note']}**", ""]
    lines += [
        f"{verdict}: {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget{budget}; {m['date']}.",
        "",
        f"Machine: {_devices(m)}; {m['cpus']} CPUs; {m['platform']}; Python {m['python']}.",
        "",
        f"TensorFlow {m['tensorflow']} (Keras {m['keras']}), built with CUDA {m['cuda_build']} and cuDNN "
        f"{m['cudnn_build']}, with kernels for {', '.join(m['cuda_capabilities_built'] or ['-'])}; "
        f"loaded at run time: {_loaded(m['loaded_cuda_versions'])}; "
        f"CUDA wheels: {_wheels(m['cuda_wheels'])}.",
        "",
        "| step | status | detail |",
        "|---|---|---|",
    ]
    for name, s in steps.items():
        lines.append(f"| {STEP_TITLES[name]} | {s['status']} | {_detail(name, s)} |")
    lines += ["", *_ceiling_table(steps["ceiling"], options), "", *_load_table(steps["load"], options)]
    return "\n".join(lines) + "\n"


def _devices(m: dict[str, Any]) -> str:
    if m["nvidia_smi"]:
        return "; ".join(m["nvidia_smi"])
    gpus = m.get("gpus") or []
    return ", ".join(f"{g['name']} ({g['compute_capability']})" for g in gpus) or "no GPU"


def _loaded(versions: dict[str, Any]) -> str:
    shown = [f"{name} {value}" for name, value in (versions or {}).items() if value]
    return ", ".join(shown) or "none (no GPU ran)"


def _wheels(wheels: dict[str, Any] | None) -> str:
    shown = [f"{name} {value}" for name, value in (wheels or {}).items() if value]
    return ", ".join(shown) or "none installed"


def _detail(name: str, s: dict[str, Any]) -> str:
    if s["status"] == "skipped":
        return s["reason"]
    if s["status"] == "failed":
        return s["error"].replace("|", "/").replace("\n", " ")
    if name == "install":
        return f"{s['requirement']} ({s['wall_s']:.0f} s)"
    if name == "environment":
        gpus = ", ".join(f"{g['name']} ({g['compute_capability']})" for g in s["gpus"])
        return f"lists {len(s['gpus'])} GPU(s): {gpus}" if gpus else "lists no GPU"
    if name == "ceiling":
        return f"{s['model']} encoder, {len(s['rows'])} rows ({s['wall_s']:.0f} s)"
    if name == "cudnn_settings":
        layers = "; ".join(
            f"{layer['layer']}: " + (", ".join(layer["problems"]) or "eligible") for layer in s["layers"]
        )
        return f"{'passed' if s['passed'] else 'FAILED'}: {layers}"
    if name == "cudnn_graph":
        ops = "; ".join(f"{p}: {', '.join(o) or 'none'}" for p, o in s["cudnn_ops_by_precision"].items())
        return f"{'passed' if s['passed'] else 'FAILED'}: {ops}"
    flags = " ".join(f"--{k} {v}" for k, v in s["server_flags"].items())
    return f"server {flags}; {s['generator']} load generator ({s['wall_s']:.0f} s)"


def _ceiling_table(ceiling: dict[str, Any], options: dict[str, Any]) -> list[str]:
    if ceiling["status"] != "ran":
        return ["Ceiling: not measured."]
    precisions = list(dict.fromkeys(r["precision"] for r in ceiling["rows"]))
    # Each other precision's windows/s against float32's at the same batch size.
    against = [p for p in precisions if p != "float32"] if "float32" in precisions else []
    speed = {(r["precision"], r["batch_size"]): r["windows_per_s"] for r in ceiling["rows"]}
    ms = {(r["precision"], r["batch_size"]): r["ms_per_batch"] for r in ceiling["rows"]}
    lines = [
        f"Ceiling of the {ceiling['model']} encoder alone, windows/s (ms per batch), one call at a time, "
        f"{options['ceiling_s']:g} s per row:",
        "",
        "| batch | " + " | ".join([*precisions, *(f"{p} / float32" for p in against)]) + " |",
        "|---:|" + "---:|" * (len(precisions) + len(against)),
    ]
    for batch in dict.fromkeys(r["batch_size"] for r in ceiling["rows"]):
        cells = [
            f"{speed[(p, batch)]:.0f} ({ms[(p, batch)]:.1f})" if (p, batch) in speed else "-"
            for p in precisions
        ]
        cells += [
            f"{speed[(p, batch)] / speed[('float32', batch)]:.2f}"
            if (p, batch) in speed and ("float32", batch) in speed
            else "-"
            for p in against
        ]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return lines


def _load_table(load: dict[str, Any], options: dict[str, Any]) -> list[str]:
    if load["status"] != "ran":
        return ["Load points: not measured."]
    lines = [
        f"Closed-loop points, {options['point_s']:g} s each after {options['warmup_s']:g} s of warm-up; "
        f"x ceiling: against the ceiling at batch {options['max_batch_size']} in "
        f"{options['server_precision']}:",
        "",
        "| call | C | windows/s | x ceiling | p50 ms | p99 ms | mean batch | compute ms per batch | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in load["points"]:
        errors = sum(v for k, v in p["outcomes"].items() if k != "OK")
        ratio = "-" if p.get("x_ceiling") is None else f"{p['x_ceiling']:.2f}"
        lines.append(f"| {p['mode']} | {p['concurrency']} | {p['windows_per_s']:.1f} | {ratio} | "
                     f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['mean_batch_size']:.1f} | "
                     f"{p['mean_compute_ms']:.1f} | {errors} |")  # fmt: skip
    return lines


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])


def _commas(values: Sequence[object]) -> str:
    return ",".join(map(str, values))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(GpuProofOptions, f"{__doc__}\n\n{DESCRIPTION}", argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    report = prove(options)
    path, text = write_results(report, ROOT / options.results_dir)
    print(text)
    verdict = "passed" if report["passed"] else "FAILED"
    log(f"gpu proof: {report['mode']}, {verdict} in {report['wall_s']:.0f} s: {path} and .md")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
