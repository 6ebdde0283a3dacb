"""The faultprint demo: train, evaluate on networks never seen, publish, serve, enrol, probe, report.

Trains the transfer encoder on random simulated networks, each read against its own
baseline, and prints the transfer protocol's figures (trainer/protocol.py) on simulated
networks it never saw and, where the foreign traffic of an independent generator is at
hand (FAULTPRINT_FOREIGN_TRAFFIC, default ../shared/foreign-traffic), on its operator
networks, each beside the sceptic's strong baseline. Then it publishes the model signed with a
key pair made for the run, serves it from a replica that trusts only that key, enrols a
day of normal windows and ONE window per fault for a simulated network the model never
saw, and lets simulated probe agents stream windows with injected faults. Last, the
closed loop: the probe agent streams a node's minutes live, at 120 minutes a second, a
fault comes and goes, and a policy engine's view, the incident events from WatchIncidents,
is printed as they happen. Everything it starts (the server, its Redis keys) is stopped and
removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the launcher lives with the benchmarks, outside the package

from benchmarks.launcher import ServerProcess  # noqa: E402

PY = sys.executable
NETWORK = "island-apac"  # a fixed profile: the transfer preset trains on random ones only
# Independent operator traffic to evaluate on, when present (never trained on).
FOREIGN = Path(os.environ.get("FAULTPRINT_FOREIGN_TRAFFIC", ROOT.parent / "shared" / "foreign-traffic"))


def run(*args: str, env: dict[str, str]) -> str:
    print("+", " ".join(args[1:]), flush=True)
    done = subprocess.run(args, env=env, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="", flush=True)
    return done.stdout


def transfer_table(artifact: Path) -> str:
    """The transfer protocol's k = 1 figures from the artifact's metadata, one row per network."""
    import json

    from faultprint.trainer.protocol import MODEL, STRONG_BASELINE, reports_from_dict

    transfer = json.loads((artifact / "metadata.json").read_text())["training"]["transfer"]
    lines = ["", "One-shot diagnosis on networks the model never saw (transfer protocol: first day enrolled, "
             "later days diagnosed; balanced accuracy, mean ± spread):", "",
             f"{'network':<14} {'k = 1':>15} {'k = 5':>15} {'false alarms':>13} "
             f"{'strong baseline k = 1':>22}"]  # fmt: skip
    for r in reports_from_dict(transfer):
        one, five, base = r.score(MODEL, 1), r.score(MODEL, 5), r.score(STRONG_BASELINE, 1)
        kind = "simulated" if r.network.startswith("unseen-") else "foreign"
        lines.append(f"{r.network:<14} {one.balanced_accuracy:.3f} ± {one.spread:.3f}  "
                     f"{five.balanced_accuracy:.3f} ± {five.spread:.3f}  {one.false_alarms:>12.3f}  "
                     f"{base.balanced_accuracy:>21.3f}   ({kind})")  # fmt: skip
    return "\n".join(lines) + "\n"


def live_loop(target: str, env: dict[str, str]) -> None:
    """A node's minutes streamed live by the probe agent while a watcher prints its incidents."""
    import threading

    import grpc
    import numpy as np

    from faultprint.traffic.rows import Rows, write_rows
    from faultprint.traffic.simulator import PROFILES, Episode, simulate_timeline
    from faultprint.v1 import incident_service_pb2, incident_service_pb2_grpc

    start, fault = 29_600_000, "hss_unreachable"
    values, labels = simulate_timeline(PROFILES[NETWORK], start, 480, [Episode(fault, 180, 90)],
                                       np.random.default_rng(8))  # fmt: skip
    path = ROOT / ".demo" / "live-node.parquet"
    rows = Rows(np.full(480, "pcscf-live"), np.full(480, NETWORK), start + np.arange(480), values, labels)
    write_rows(rows, path)
    print(f"\nThe closed loop: pcscf-live streams 8 hours of minutes; {fault} from minute 180 to 270.")
    channel = grpc.insecure_channel(target)
    watch = incident_service_pb2_grpc.IncidentServiceStub(channel).WatchIncidents(
        incident_service_pb2.WatchIncidentsRequest(network=NETWORK, node="pcscf-live")
    )

    def show() -> None:
        try:
            for event in watch:
                kind = incident_service_pb2.IncidentEventType.Name(event.type).removeprefix(
                    "INCIDENT_EVENT_TYPE_"
                )
                why = ", ".join(
                    f"{d.statistic} {d.departure:+.1f}" for d in event.incident.explanation.from_normal
                )
                print(f"  policy engine <- {kind:<6} {event.incident.label} at traffic minute "
                      f"{event.minute - start}  why: {why}", flush=True)  # fmt: skip
        except grpc.RpcError:
            pass  # cancelled below

    watcher = threading.Thread(target=show, daemon=True)
    watcher.start()
    run(PY, "-m", "faultprint.client", "--target", target, "agent", "--rows", str(path),
        "--minutes-per-second", "120", "--batch-minutes", "1", env=env)  # fmt: skip
    import time

    time.sleep(1.0)
    watch.cancel()
    channel.close()
    run(PY, "-m", "faultprint.client", "--target", target, "incidents", "--network", NETWORK,
        "--node", "pcscf-live", env=env)  # fmt: skip


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
    keys = tempfile.TemporaryDirectory(prefix="faultprint-demo-keys-")
    try:
        foreign = sorted(str(p) for p in FOREIGN.glob("*.parquet")) if FOREIGN.is_dir() else []
        evaluate = ["--eval-rows", *foreign] if foreign else []
        if not foreign:
            print(f"no foreign traffic at {FOREIGN}: evaluating on simulated networks only")
        out = run(PY, "-m", "faultprint.trainer", "train", "--config", "transfer", "--out", str(artifacts),
                  "--no-progress", *evaluate, env=env)  # fmt: skip
        artifact = out.strip().splitlines()[-1]
        print(transfer_table(Path(artifact)), flush=True)
        # The trainer signs what it publishes; the replica serves only what that key signed.
        run(PY, "-m", "faultprint.trainer", "keygen", "--out", keys.name, env=env)
        env["FAULTPRINT_SIGNING_KEY"] = str(Path(keys.name) / "signing-key.pem")
        env["FAULTPRINT_MODEL_TRUSTED_KEYS"] = str(Path(keys.name) / "signing-key.pub.pem")
        run(PY, "-m", "faultprint.trainer", "publish", artifact, "--promote", env=env)
        with (
            open(ROOT / ".demo" / "server.log", "w") as log,
            ServerProcess({"model-source": "redis"}, env, log) as server,
        ):
            target = server.target
            print(f"server SERVING at {target} (log: .demo/server.log)")
            run(PY, "-m", "faultprint.client", "--target", target, "enrol", "--network", NETWORK,
                "--normal-windows", "24", env=env)  # fmt: skip
            run(PY, "-m", "faultprint.client", "--target", target, "probe", "--network", NETWORK,
                "--agents", "8", "--windows-per-agent", "25", "--seed", "5", env=env)  # fmt: skip
            live_loop(target, env)
        return 0
    finally:
        keys.cleanup()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())
