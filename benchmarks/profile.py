"""Where a server's time goes under load: py-spy samples a server process while probes stream to it.

Starts a server with the small encoder (where Python and RPC costs dominate), drives it
with closed-loop streaming probes from a separate process, samples every server thread
with py-spy, and writes the top functions by own time and by inclusive time to
benchmarks/results/profile-<model>-<mode>.txt. Needs REDIS_URL and py-spy (`make bench`
installs it).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.suite import PLANS, RESULTS, plan_server  # noqa: E402
from client.throttle import ThrottleOptions  # noqa: E402


def summarise(raw: Path, top: int) -> str:
    """Own and inclusive sample counts per function, from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        threads[frames[0]] += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "by thread:"]
    lines += [f"  {n:6} {n / total:6.1%}  {name}" for name, n in threads.most_common()]
    lines += ["", "own time:"] + [f"  {n:6} {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"] + [
        f"  {n:6} {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)
    ]
    return "\n".join(lines) + "\n"


def _open_loop(args: argparse.Namespace) -> list[str]:
    """Load-generator flags for an open-loop (overload) run; none for closed-loop probes."""
    if not args.rate:
        return []
    return ["--rate", str(args.rate), "--deadline-ms", str(args.deadline_ms),
            "--throttle-ratio", str(args.throttle_ratio)]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="small", choices=sorted(PLANS))
    parser.add_argument("--mode", default="stream", choices=("unary", "stream"))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open-loop windows/s instead of closed-loop probes (unary overload)",
    )
    parser.add_argument("--deadline-ms", type=float, default=200.0, help="per-call deadline with --rate")
    parser.add_argument(
        "--throttle-ratio",
        type=float,
        default=ThrottleOptions().ratio,
        help="the probes' client-side throttling ratio with --rate (0: off)",
    )
    args = parser.parse_args()
    kind = f"{args.mode}-overload" if args.rate else args.mode
    out = RESULTS / f"profile-{args.model}-{kind}.txt"
    with tempfile.TemporaryDirectory() as tmp, plan_server(PLANS[args.model], "profile") as server:
        load = subprocess.Popen(
            [sys.executable, str(HERE / "load_generator.py"), "--target", server.target,
             "--mode", args.mode, "--concurrency", str(args.concurrency),
             "--duration-s", str(args.seconds + 2), "--warmup-s", "2", *_open_loop(args)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        raw = Path(tmp) / "server.raw"
        assert server.process is not None
        py_spy = str(Path(sys.executable).parent / "py-spy")
        subprocess.run(
            [py_spy, "record", "--pid", str(server.process.pid), "--duration", str(args.seconds),
             "--rate", "200", "--threads", "--nonblocking", "--format", "raw", "--output", str(raw)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = load.communicate()[0].strip().splitlines()[-1]
        load_shape = f"{args.rate:g} windows/s offered" if args.rate else f"C={args.concurrency}"
        text = f"{args.model} encoder, {args.mode}, {load_shape}; load: {result}\n\n" + summarise(
            raw, args.top
        )
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
