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

from benchmarks.suite import (  # noqa: E402
    PLANS,
    RESULTS,
    add_load_point_arguments,
    describe_load_point,
    load_generator_command,
    load_point,
    plan_server,
)


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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_point_arguments(parser)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    kind = f"{args.mode}-overload" if args.rate else args.mode
    out = RESULTS / f"profile-{args.model}-{kind}.txt"
    with tempfile.TemporaryDirectory() as tmp, plan_server(PLANS[args.model], "profile") as server:
        command = load_generator_command(
            server.target, **load_point(args), duration_s=args.seconds + 2, warmup_s=2
        )
        load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        raw = Path(tmp) / "server.raw"
        assert server.process is not None
        py_spy = str(Path(sys.executable).parent / "py-spy")
        subprocess.run(
            [py_spy, "record", "--pid", str(server.process.pid), "--duration", str(args.seconds),
             "--rate", "200", "--threads", "--nonblocking", "--format", "raw", "--output", str(raw)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = load.communicate()[0].strip().splitlines()[-1]
        text = f"{args.model} encoder, {describe_load_point(args)}; load: {result}\n\n"
        text += summarise(raw, args.top)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
