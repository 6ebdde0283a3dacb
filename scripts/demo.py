"""The faultprint demo: train, publish, serve, enrol one window per condition, run probes, report.

Trains the small encoder on two simulated networks, serves it, enrols ONE example
window per condition for a third network the model never saw, then lets simulated
probe agents stream windows with injected faults and prints a confusion table.
Everything it starts (the server, its Redis keys) is stopped and removed at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NETWORK = "island-apac"  # not among the training networks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, env: dict[str, str]) -> str:
    print("+", " ".join(args[1:]), flush=True)
    done = subprocess.run(args, env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="", flush=True)
    return done.stdout


def wait_serving(target: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"server exited with code {server.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise SystemExit(f"server at {target} did not become SERVING within {timeout_s:.0f} s")


def main() -> int:
    redis_url = os.environ["REDIS_URL"]
    prefix = f"faultprint-demo-{uuid.uuid4().hex[:8]}"
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        "FAULTPRINT_REDIS_PREFIX": prefix,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    artifacts = ROOT / ".demo" / "artifacts"
    server = None
    try:
        artifact = run(PY, "-m", "trainer", "train", "--config", "small", "--out", str(artifacts), env=env)
        run(PY, "-m", "trainer", "publish", artifact.strip().splitlines()[-1], env=env)
        log = open(ROOT / ".demo" / "server.log", "w")
        server = subprocess.Popen(
            [PY, "-m", "server", "--listen-address", target, "--model-source", "redis"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_serving(target, server)
        print(f"server SERVING at {target} (log: .demo/server.log)")
        run(PY, "-m", "client", "--target", target, "enrol", "--network", NETWORK, env=env)
        run(PY, "-m", "client", "--target", target, "probe", "--network", NETWORK,
            "--agents", "8", "--windows-per-agent", "25", "--seed", "5", env=env)  # fmt: skip
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())
