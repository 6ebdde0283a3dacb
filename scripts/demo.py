"""The faultprint demo: train, publish, serve, enrol one window per condition, run probes, report.

Trains the small encoder on two simulated networks, serves it, enrols ONE example
window per condition for a third network the model never saw, then lets simulated
probe agents stream windows with injected faults and prints a confusion table.
Everything it starts (the server, its Redis keys) is stopped and removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the launcher lives with the benchmarks, outside the package

from benchmarks.launcher import ServerProcess  # noqa: E402

PY = sys.executable
NETWORK = "island-apac"  # not among the training networks


def run(*args: str, env: dict[str, str]) -> str:
    print("+", " ".join(args[1:]), flush=True)
    done = subprocess.run(args, env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="", flush=True)
    return done.stdout


def main() -> int:
    redis_url = os.environ["REDIS_URL"]
    prefix = f"faultprint-demo-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "FAULTPRINT_REDIS_PREFIX": prefix,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    artifacts = ROOT / ".demo" / "artifacts"
    try:
        artifact = run(
            PY, "-m", "faultprint.trainer", "train", "--config", "small", "--out", str(artifacts), env=env
        )
        run(
            PY, "-m", "faultprint.trainer", "publish", artifact.strip().splitlines()[-1], "--promote", env=env
        )
        with (
            open(ROOT / ".demo" / "server.log", "w") as log,
            ServerProcess({"model-source": "redis"}, env, log) as server,
        ):
            target = server.target
            print(f"server SERVING at {target} (log: .demo/server.log)")
            run(PY, "-m", "faultprint.client", "--target", target, "enrol", "--network", NETWORK, env=env)
            run(PY, "-m", "faultprint.client", "--target", target, "probe", "--network", NETWORK,
                "--agents", "8", "--windows-per-agent", "25", "--seed", "5", env=env)  # fmt: skip
        return 0
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())
