"""Open-loop overload against one server, once per client-throttling ratio, to tune the throttle.

Starts one server with a plan's settings (the small encoder by default), then for each
ratio drives it from a separate load-generator process with unary calls at a fixed rate,
each with its deadline, and prints one line per ratio: calls by outcome in the measured
window, accepted windows/s and their p99, and the per-second timelines of accepted, LATE
(the client's own deadline fired first) and DEADLINE_EXCEEDED calls. The suite's overload
run uses one ratio on a fresh server; this compares ratios on the same server minutes
apart. Needs REDIS_URL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.suite import PLANS, generate_load, plan_server  # noqa: E402
from faultprint.client.throttle import ThrottleOptions  # noqa: E402


def overload(target: str, args: argparse.Namespace, ratio: str) -> dict[str, Any]:
    """One load-generator run at args.rate with this throttling ratio; its JSON result."""
    return generate_load(target, rate=args.rate, deadline_ms=args.deadline_ms, duration_s=args.seconds,
                         warmup_s=args.warmup_s, throttle_ratio=ratio,
                         throttle_window_s=args.window_s)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="small", choices=sorted(PLANS))
    parser.add_argument("--rate", type=float, required=True, help="windows/s offered")
    parser.add_argument("--ratios", default="1.1,2", help="throttling ratios to compare (0: off)")
    parser.add_argument("--deadline-ms", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per ratio")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--window-s", type=float, default=ThrottleOptions().window_s,
                        help="seconds of history the client-side throttling counts")  # fmt: skip
    args = parser.parse_args()
    with plan_server(PLANS[args.model], "overload") as server:
        for ratio in args.ratios.split(","):
            result = overload(server.target, args, ratio)
            timeline: dict[str, list[int]] = result["timeline"]
            print(f"ratio {ratio}: {result['outcomes']}; accepted {result['windows_per_s']:.0f}/s, "
                  f"p99 {result['p99_ms']:.0f} ms", flush=True)  # fmt: skip
            for outcome in ("OK", "LATE", "DEADLINE_EXCEEDED"):
                print(f"  {outcome} per second: {timeline.get(outcome, [])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
