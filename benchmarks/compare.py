"""Server settings compared under one load point, interleaved, so the machine's drift hits each alike.

On a shared machine the encoder's speed moves by ±20 % from one minute to the next, so
two settings timed one after the other compare two moments of the machine as much as
the two settings. This starts one server per variant at once (each with its own Redis
prefix, all serving the same untrained artifact size), then runs the same closed-loop
load point against each in turn, round after round, and prints each variant's median,
lowest and highest windows/s and median p99 over the rounds. Idle servers cost next to
nothing, so only the one under load competes with the load generator for the CPU.
With --rate the point is an open-loop overload instead: calls offered at that rate, each
with --deadline-ms, from probes throttling themselves (--throttle-ratio), and the table
counts the calls answered after their deadline (LATE).

    python benchmarks/compare.py --model small --mode stream --concurrency 64 \\
        --variant default --variant "delay20 max-queue-delay-ms=20"

A variant is a name followed by any FLAG=VALUE words: flags of ``python -m faultprint.server`` set on
top of the model's benchmark plan (benchmarks/suite.py). Needs REDIS_URL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.suite import (  # noqa: E402
    PLANS,
    add_load_point_arguments,
    describe_load_point,
    generate_load,
    load_point,
    plan_server,
    with_flags,
)


@dataclass(frozen=True)
class Variant:
    """One server configuration under comparison: a label and its server flags (NAME=VALUE)."""

    name: str
    flags: tuple[str, ...] = ()


def parse_variant(text: str) -> Variant:
    """NAME, then any FLAG=VALUE words, separated by spaces (a value may hold commas)."""
    words = text.split()
    if not words or "=" in words[0]:
        raise ValueError(f"variant {text!r} must start with a name")
    if any("=" not in w or w.startswith("=") for w in words[1:]):
        raise ValueError(f"variant {text!r}: expected NAME FLAG=VALUE ...")
    return Variant(words[0], tuple(words[1:]))


# Outcomes of the load generator's tally that are not refusals or failures: "offered" counts
# every call an open-loop run offered, whatever became of it.
_NOT_FAILURES = frozenset({"OK", "LATE", "offered"})


def summarise(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """A variant's rounds reduced to the median, lowest and highest windows/s, the median p99,
    the calls answered after their deadline (LATE), and the calls refused (by the server or
    by the probes' own throttling) or failed otherwise."""
    rates = [r["windows_per_s"] for r in rounds]
    return {
        "median_windows_per_s": statistics.median(rates),
        "min_windows_per_s": min(rates),
        "max_windows_per_s": max(rates),
        "median_p99_ms": statistics.median(r["p99_ms"] for r in rounds),
        "late": sum(r["outcomes"].get("LATE", 0) for r in rounds),
        "errors": sum(
            n for r in rounds for outcome, n in r["outcomes"].items() if outcome not in _NOT_FAILURES
        ),
    }


def run_rounds(args: argparse.Namespace, variants: list[Variant]) -> dict[str, list[dict[str, Any]]]:
    """Every variant's server started at once, then the load point against each in turn, per round."""
    rounds: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    with ExitStack() as servers:
        targets = {}
        for v in variants:
            plan = with_flags(PLANS[args.model], list(v.flags))
            targets[v.name] = servers.enter_context(plan_server(plan, "compare")).target
        load = load_point(args) | {"duration_s": args.seconds, "warmup_s": args.warmup_s}
        for i in range(args.rounds):
            for v in variants:
                result = generate_load(targets[v.name], **load)
                rounds[v.name].append(result)
                print(f"round {i + 1} {v.name}: {result['windows_per_s']:.0f} windows/s, "
                      f"p99 {result['p99_ms']:.1f} ms", flush=True)  # fmt: skip
    return rounds


def print_table(
    args: argparse.Namespace, variants: list[Variant], summary: dict[str, dict[str, float]]
) -> None:
    point = describe_load_point(args)
    print(f"\n{args.model} encoder, {point}, {args.rounds} rounds of {args.seconds:g} s each")
    print(
        "| variant | flags | median windows/s | lowest | highest | median p99 ms | LATE | refused or failed |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        s = summary[v.name]
        print(f"| {v.name} | {', '.join(v.flags) or '(plan)'} | {s['median_windows_per_s']:.0f} | "
              f"{s['min_windows_per_s']:.0f} | {s['max_windows_per_s']:.0f} | {s['median_p99_ms']:.1f} | "
              f"{s['late']:.0f} | {s['errors']:.0f} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_point_arguments(parser)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per round")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME [FLAG=VALUE ...]",
                        help="a server configuration to compare; repeatable (at least two)")  # fmt: skip
    parser.add_argument("--out", help="also write every round and the summary here as JSON")
    args = parser.parse_args()
    try:
        variants = [parse_variant(v) for v in args.variant]
    except ValueError as exc:
        parser.error(str(exc))
    if len(variants) < 2 or len({v.name for v in variants}) < len(variants):
        parser.error("give at least two --variant options with distinct names")
    rounds = run_rounds(args, variants)
    summary = {name: summarise(r) for name, r in rounds.items()}
    print_table(args, variants, summary)
    if args.out:
        record = {"args": vars(args), "rounds": rounds, "summary": summary}
        Path(args.out).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
