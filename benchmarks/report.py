"""Turns a benchmark-suite result into the bar checks, a markdown table and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Fraction an overload run's RSS may grow between the median of its first settled 10 s and
# that of its last 10 s (a third of the run each, in a run shorter than 30 s).
RSS_GROWTH_ALLOWED = 0.05


def ceiling_at(model: dict[str, Any], batch_size: int) -> dict[str, float]:
    return next(r for r in model["ceiling"] if r["batch_size"] == batch_size)


def point(model: dict[str, Any], server: str, mode: str, concurrency: int) -> dict[str, Any] | None:
    return next(
        (p for p in model[server]["points"] if p["mode"] == mode and p["concurrency"] == concurrency), None
    )


def c1_compute_ms(model: dict[str, Any], c1_point: dict[str, Any]) -> float:
    """The batch-1 compute time a C = 1 point's p99 is held to: the encoder's mean compute per
    batch inside the server during that same point, so the bar measures what the server adds
    and not the drift of a shared machine between the ceiling run and the load run minutes
    later. Results without the in-run figure fall back to the ceiling's batch-1 time."""
    return float(c1_point.get("mean_compute_ms") or ceiling_at(model, 1)["ms_per_batch"])


def bar_ceiling(model: dict[str, Any], p: dict[str, Any]) -> float:
    """The ceiling a throughput bar divides by: the mean of the two timed just before and after
    the point when the run has them (full runs), else the run's first ceiling at the server's
    max batch size."""
    return float(
        p.get("ceiling_beside_windows_per_s") or ceiling_at(model, model["max_batch_size"])["windows_per_s"]
    )


def _bar(name: str, measured: float, required: float, passed: bool, unit: str = "") -> dict[str, Any]:
    return {"bar": name, "measured": measured, "required": required, "unit": unit, "pass": bool(passed)}


def check_bars(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The batching issue's bars, each a ratio or bound within this one run."""
    bars = []
    models = report["models"]
    if "original" in models:
        m = models["original"]
        for mode in ("unary", "stream"):
            p, naive = point(m, "batching", mode, 64), point(m, "naive", mode, 64)
            if p:
                ratio = p["windows_per_s"] / bar_ceiling(m, p)
                bars.append(
                    _bar(f"original C=64 {mode}: throughput / ceiling", ratio, 0.90, ratio >= 0.90, "x")
                )
            if p and naive and naive["windows_per_s"]:
                ratio = p["windows_per_s"] / naive["windows_per_s"]
                bars.append(_bar(f"original C=64 {mode}: throughput / naive", ratio, 4.0, ratio >= 4.0, "x"))
    if "small" in models:
        m = models["small"]
        p = point(m, "batching", "stream", 64)
        if p:
            ratio = p["windows_per_s"] / bar_ceiling(m, p)
            bars.append(_bar("small C=64 stream: throughput / ceiling", ratio, 0.40, ratio >= 0.40, "x"))
    for name, m in models.items():
        for mode in ("unary", "stream"):
            p = point(m, "batching", mode, 1)
            if p:
                bound = c1_compute_ms(m, p) + 5
                bars.append(_bar(f"{name} C=1 {mode}: p99 <= batch-1 compute + 5 ms", p["p99_ms"], bound,
                                 p["p99_ms"] <= bound, "ms"))  # fmt: skip
        overload = m["batching"].get("overload")
        if overload:
            late = overload["outcomes"].get("LATE", 0)
            bars.append(_bar(f"{name} overload: requests answered after their deadline", late, 0, late == 0))
            growth = overload["rss_mb_end"] / overload["rss_mb_start"] - 1
            bars.append(_bar(f"{name} overload: RSS growth over the run", growth, RSS_GROWTH_ALLOWED,
                             growth <= RSS_GROWTH_ALLOWED, "fraction"))  # fmt: skip
    return bars


def _c1_computes(model: dict[str, Any]) -> str:
    points = [p for p in model["batching"]["points"] if p["concurrency"] == 1 and p.get("mean_compute_ms")]
    return ", ".join(f"{p['mode']} {p['mean_compute_ms']:.2f} ms" for p in points) or "not measured"


def _layouts(row: dict[str, Any]) -> str:
    """How many encoder calls at once the ceiling was timed with, and what each layout gave."""
    by = row.get("windows_per_s_by_instances")
    if not by:
        return ""
    timed = ", ".join(f"{n} at once {w:.0f}" for n, w in by.items())
    return f" (the best of: {timed})"


def load_generators(report: dict[str, Any]) -> list[str]:
    """Which load generators sent the closed-loop points (results from before the native
    generator name none: the Python one sent them)."""
    points = [
        p for m in report["models"].values() for server in ("batching", "naive") for p in m[server]["points"]
    ]
    return sorted({p.get("generator", "python") for p in points})


def write_markdown(report: dict[str, Any], path: Path) -> str:
    generators = ", ".join(load_generators(report))
    lines = [
        f"Machine: {report['machine']}",
        "",
        f"Closed-loop points sent by the {generators} load generator.",
        "",
    ]
    for name, m in report["models"].items():
        peak = ceiling_at(m, m["max_batch_size"])
        lines += [
            f"### {name} encoder (server max batch size {m['max_batch_size']})",
            "",
            f"Ceiling at batch {m['max_batch_size']}: **{peak['windows_per_s']:.0f} windows/s**"
            f"{_layouts(peak)}; "
            f"batch-1 compute {ceiling_at(m, 1)['ms_per_batch']:.2f} ms (mean), "
            f"{ceiling_at(m, 1)['p99_ms_per_batch']:.2f} ms (p99); inside the server during the C = 1 "
            f"points: {_c1_computes(m)}.",
            "",
            "| server | call | C | windows/s | x ceiling | p50 ms | p95 ms | p99 ms | errors | mean batch |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for server in ("batching", "naive"):
            for p in m[server]["points"]:
                errors = sum(v for k, v in p["outcomes"].items() if k != "OK")
                ratio = p["windows_per_s"] / peak["windows_per_s"]
                lines.append(
                    f"| {server} | {p['mode']} | {p['concurrency']} | {p['windows_per_s']:.1f} | "
                    f"{ratio:.2f} | "
                    f"{p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {errors} | "
                    f"{p['mean_batch_size']:.1f} |"
                )
        beside = [p for p in m["batching"]["points"] if p.get("ceiling_beside_windows_per_s")]
        if beside:
            timed = "; ".join(
                f"{p['mode']} C={p['concurrency']}: {p['ceiling_before_windows_per_s']:.0f} before, "
                f"{p['ceiling_after_windows_per_s']:.0f} after "
                f"(x {p['windows_per_s'] / bar_ceiling(m, p):.2f} their mean)"
                for p in beside
            )
            lines += ["", f"Ceiling at batch {m['max_batch_size']} timed just before and after the bar "
                          f"points, windows/s (the bars divide by the mean): {timed}."]  # fmt: skip
        o = m["batching"].get("overload")
        if o:
            lines += [
                "",
                f"Overload ({o['seconds']:.0f} s, unary, deadline {o['deadline_ms']:.0f} ms, client "
                f"throttling ratio {o.get('throttle_ratio') or 'off'}): offered "
                f"{o['offered_windows_per_s']:.0f} windows/s (2 x {o['capacity_windows_per_s']:.0f}); "
                f"accepted {o['windows_per_s']:.0f}/s with p99 {o['p99_ms']:.1f} ms; rejection rate "
                f"{o['rejection_rate']:.2f}; outcomes {o['outcomes']}; RSS (medians at the start and end of "
                f"the run) {o['rss_mb_start']:.0f} → {o['rss_mb_end']:.0f} MB (max {o['rss_mb_max']:.0f}). "
                "Windows whose batch finished after their deadline by the server's clock: "
                f"{o.get('server_late', 'not measured')}; server event-loop stalls over 50 ms: "
                f"{o.get('server_loop_stalls', 'not measured')}; largest lateness of the suite's own "
                f"1 s timer (a stall of the whole machine): {max(o.get('sampler_wake_lag_ms') or [0]):.0f} "
                "ms. Successful answers ready with at most so many ms of their deadline left, by the "
                f"server's clock: {o.get('answers_ready_with_ms_left', 'not measured')}. Calls reaching the "
                f"handlers ({o.get('calls_arriving', 'not measured')}) with at most so many ms of their "
                f"deadline left (queued in gRPC): {o.get('calls_arriving_with_ms_left', 'not measured')}. "
                "Largest lag of the "
                f"load generator's own event loop: {max(o.get('generator_loop_lag_ms') or [0]):.0f} ms.",
            ]
        lines.append("")
    lines += ["### Bars", "", "| bar | measured | required | pass |", "|---|---:|---:|---|"]
    for bar in report["bars"]:
        sign = "≥" if "throughput" in bar["bar"] else "≤"
        lines.append(f"| {bar['bar']} | {bar['measured']:.3g} | {sign} {bar['required']:.3g} | "
                     f"{'PASS' if bar['pass'] else 'FAIL'} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.5 * len(models)), squeeze=False)
    for row, (name, m) in enumerate(models.items()):
        throughput, latency = axes[row]
        for server, style in (("batching", "-o"), ("naive", "--s")):
            for mode in ("unary", "stream"):
                pts = sorted(
                    (p for p in m[server]["points"] if p["mode"] == mode), key=lambda p: p["concurrency"]
                )
                if pts:
                    cs = [p["concurrency"] for p in pts]
                    label = f"{server} {mode}"
                    throughput.plot(cs, [p["windows_per_s"] for p in pts], style, label=label)
                    latency.plot(cs, [p["p99_ms"] for p in pts], style, label=label)
        peak_row = ceiling_at(m, m["max_batch_size"])
        throughput.axhline(
            peak_row["windows_per_s"],
            color="black",
            linestyle=":",
            label=f"ceiling (batch {m['max_batch_size']}, best layout)",
        )
        one_at_a_time = peak_row.get("windows_per_s_by_instances", {}).get("1")
        if one_at_a_time and one_at_a_time < peak_row["windows_per_s"]:
            throughput.axhline(one_at_a_time, color="grey", linestyle=":", label="… one call at a time")
        for ax, ylabel in ((throughput, "windows/s"), (latency, "p99 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent probes (C)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{name} encoder")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        latency.set_yscale("log")
    fig.suptitle(
        f"faultprint on {report['machine']['cpus']} CPUs, {report['machine']['platform']}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
