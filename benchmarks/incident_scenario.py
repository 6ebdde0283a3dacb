"""The closed loop end to end: a fleet streamed minute by minute, faults injected, incidents checked
against the truth, with a replica killed mid-run.

``python -m benchmarks.incident_scenario --artifact DIR`` simulates networks the model never
trained on (random profiles), each with nodes over --days days after a history day. Per
network it enrols, as an operator would: a day of normal (a normal case and a day of
unlabelled traffic for the baseline) and ONE window per fault from a reference node. Then
the probe agent (client/agent.py) streams every node's minutes, as fast as the servers
take them, to two replicas sharing Redis; when --kill-at of the minutes are sent, the
replica serving the stream is killed with SIGKILL and the agent moves to the other.

Afterwards the incident stream in Redis is read and scored against the injected truth as
benchmarks/incident_truth.py defines it (visibility from ClassifyWindow of each episode's
most faulty window; ONSET and ABATED decided within 10 minutes, by the events' minute
field; false incidents per fault-free node-day), and every incident id must have exactly
one ONSET and one ABATED entry in the stream (none lost or duplicated across the kill).

Results go to benchmarks/results/incident-scenario.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from benchmarks.incident_truth import START, FleetOptions, Found, Network, Truth, score, simulate_networks
from benchmarks.launcher import ROOT, ServerProcess
from faultprint.client.agent import AgentOptions, ProbeAgent
from faultprint.client.client import AsyncFaultprintClient
from faultprint.registry.connection import SyncRedis, connect, delete_deployment
from faultprint.registry.layout import RedisLayout
from faultprint.traffic.catalogue import WINDOW_STEPS
from faultprint.traffic.rows import Rows, write_rows
from faultprint.traffic.simulator import NORMAL
from faultprint.v1 import incident_service_pb2

RESULTS = ROOT / "benchmarks" / "results"


def write_days(network: Network, days: int, out: Path) -> None:
    """The network's streamed days as row files, one per day (the agent reads them in name order)."""
    for d in range(days):
        at = slice(d * 1440, (d + 1) * 1440)
        minutes = START + 1440 + np.arange(d * 1440, (d + 1) * 1440)
        parts = [{"node": np.full(1440, n.node), "network": np.full(1440, n.network), "minute": minutes,
                  "values": n.values[at], "label": n.labels[at]} for n in network.nodes]  # fmt: skip
        write_rows(Rows.concat(parts), out / f"day{d + 1}-{network.profile.name}.parquet")


async def enrol(target: str, networks: list[Network]) -> None:
    """What an operator enrols per network: a day of normal (a normal case, and unlabelled
    traffic for the baseline) and ONE window per fault."""
    async with AsyncFaultprintClient(target, timeout_s=120) as client:
        for network in networks:
            name, history = network.profile.name, network.history
            await client.create_reference_case(name, NORMAL, list(history[0].reshape(24, WINDOW_STEPS, -1)))
            traffic = np.concatenate([h.reshape(24, WINDOW_STEPS, -1) for h in history[1:]])
            for start in range(0, len(traffic), 64):
                await client.add_baseline_traffic(name, list(traffic[start : start + 64]), replace=start == 0)
            for fault, window in network.faults.items():
                await client.create_reference_case(name, fault, [window])


async def mark_visible(target: str, truths: list[Truth]) -> None:
    async with AsyncFaultprintClient(target, timeout_s=120) as client:
        for t in truths:
            t.visible = (await client.classify(t.network, t.node, t.peak)).label == t.label


async def stream(source: Path, minutes: int, targets: tuple[str, str], first: ServerProcess,
                 kill_at: float) -> dict[str, object]:  # fmt: skip
    agent = ProbeAgent(
        AgentOptions(targets, source, batch_minutes=500, max_unacknowledged=8, reconnect_s=0.2)
    )
    run = asyncio.create_task(agent.run())
    killed_at = None
    started = time.perf_counter()
    while not run.done():
        await asyncio.sleep(0.2)
        if killed_at is None and kill_at > 0 and agent.tally.minutes >= kill_at * minutes:
            assert first.process is not None
            first.process.kill()  # SIGKILL: nothing more is written or acknowledged
            killed_at = agent.tally.minutes
    tally = await run
    return {"wall_s": time.perf_counter() - started, "killed_after_minutes": killed_at,
            "agent": {k: v for k, v in vars(tally).items() if k != "refusals"}}  # fmt: skip


def found_in_stream(client: SyncRedis, prefix: str) -> tuple[list[Found], int]:
    """The incidents the stream holds, and how many of its entries repeat a (kind, incident)."""
    events: dict[str, dict[str, incident_service_pb2.IncidentEvent]] = {}
    entries: Counter[tuple[str, str]] = Counter()
    for _entry_id, fields in client.xrange(RedisLayout(prefix).incidents):
        event = incident_service_pb2.IncidentEvent.FromString(fields[b"event"])
        kind = fields[b"kind"].decode()
        entries[(kind, event.incident.incident_id)] += 1
        events.setdefault(event.incident.incident_id, {})[kind] = event
    found = []
    for by_kind in events.values():
        onset, abated = by_kind.get("ONSET"), by_kind.get("ABATED")
        incident = (abated or onset or next(iter(by_kind.values()))).incident
        found.append(Found(incident.network, incident.node, incident.label, incident.start_time.seconds // 60,
                           incident.end_time.seconds // 60 if incident.HasField("end_time") else None,
                           onset.minute if onset else None, abated.minute if abated else None))  # fmt: skip
    return found, sum(n - 1 for n in entries.values() if n > 1)


def run(args: argparse.Namespace) -> dict[str, object]:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-scenario-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": redis_url, "FAULTPRINT_REDIS_PREFIX": prefix}
    client = connect(redis_url)
    options = FleetOptions(args.networks, args.nodes_per_network, args.days, args.faulty_share,
                           args.faults_per_day, args.seed)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        simulated_at = time.perf_counter()
        networks, truths, fault_free = [], [], set()
        for network in simulate_networks(options):
            write_days(network, args.days, Path(tmp))
            truths += [t for n in network.nodes for t in n.truths]
            fault_free |= {(n.network, n.node) for n in network.nodes if not n.truths}
            network.nodes = []  # the rows are on disk now
            networks.append(network)
        simulate_s = time.perf_counter() - simulated_at
        flags = {"model-source": args.artifact, "log-level": "WARNING"}
        try:
            with ServerProcess(flags, env) as first, ServerProcess(flags, env) as second:
                asyncio.run(enrol(first.target, networks))
                time.sleep(3)  # the second replica follows the enrolments (change stream)
                asyncio.run(mark_visible(second.target, truths))
                minutes = options.networks * options.nodes_per_network * options.days * 1440
                streamed = asyncio.run(stream(Path(tmp), minutes, (first.target, second.target), first,
                                              args.kill_at))  # fmt: skip
                time.sleep(2)  # the last flush
                found, duplicated = found_in_stream(client, prefix)
        finally:
            delete_deployment(client, RedisLayout(prefix))
    node_days = len(fault_free) * args.days
    return {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "artifact": Path(args.artifact).name, "networks": args.networks,
            "nodes": args.networks * args.nodes_per_network, "days": args.days, "node_minutes": minutes,
            "simulate_s": simulate_s, **streamed,
            **score(truths, fault_free, node_days, found, duplicated)}  # fmt: skip


def markdown(result: dict) -> str:  # type: ignore[type-arg]
    lines = [
        "# Incident scenario", "",
        f"{result['nodes']} nodes of {result['networks']} networks never trained on, {result['days']} days, "
        f"{result['node_minutes']} node-minutes streamed in {result['wall_s']:.0f} s by the probe agent "
        f"to two replicas; the first killed with SIGKILL after {result['killed_after_minutes']} minutes. "
        f"Model {result['artifact']}.", "",
        "| measure | value |", "|---|---:|",
    ]  # fmt: skip
    for key in ("episodes", "visible", "visible_ok", "visible_one_incident", "visible_label_right", "missed",
                "split", "late_onsets", "late_abatements", "early_onsets", "early_abatements", "incidents",
                "false_incidents",
                "false_incidents_on_fault_free_nodes", "fault_free_node_days",
                "false_incidents_per_fault_free_node_day", "never_abated", "duplicated_events"):  # fmt: skip
        lines.append(f"| {key.replace('_', ' ')} | {result[key]} |")
    lines += ["", f"Onset delay (minutes after the fault's first minute): {result['onset_delay_minutes']}",
              f"Abatement delay (minutes after its last): {result['abate_delay_minutes']}",
              f"Right per fault: {result['ok_by_label']}",
              f"False incidents by label: {result['false_labels']}",
              f"Agent: {result['agent']}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="a trained model's artifact directory")
    parser.add_argument("--networks", type=int, default=5)
    parser.add_argument("--nodes-per-network", type=int, default=100)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--faulty-share", type=float, default=0.6, help="share of nodes with faults")
    parser.add_argument("--faults-per-day", type=float, default=2.0, help="on a faulty node")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of minutes sent when the first "
                        "replica is killed (0: no kill)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=FleetOptions.seed)
    parser.add_argument("--name", default="incident-scenario", help="results file name")
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
