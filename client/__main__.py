"""Client command line: ``python -m faultprint.client enrol|probe|agent|incidents|info|baseline``.

enrol     enrol reference cases: from an operator's row file (--rows, one node between two
          times, with the label given), or simulated windows, one case per condition
probe     run simulated probe agents that stream windows, print diagnoses and a confusion table
agent     the probe agent: stream per-minute rows from a file or an exporter's directory, live,
          to the server's replicas (reconnecting, resending what was not acknowledged)
incidents list a network's open incidents, a node's history or condition, or acknowledge one
info      print the serving model's version and input specification
baseline  print the baseline the serving model reads a network's windows against
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from faultprint import __version__
from faultprint.traffic.simulator import CONDITIONS, PROFILES

# How every command reaches the server: TLS, a client certificate, a bearer token (client/channels.py).
_SECURITY_FLAGS = (
    ("--tls-ca", "FAULTPRINT_TLS_CA", "PEM file of the authorities that sign the server's certificate: TLS"),
    ("--tls-cert", "FAULTPRINT_TLS_CERT", "PEM client certificate, for a server that asks for mutual TLS"),
    ("--tls-key", "FAULTPRINT_TLS_KEY", "PEM key of --tls-cert"),
    ("--tls-server-name", "FAULTPRINT_TLS_SERVER_NAME", "name to check the server's certificate against"),
    ("--token-file", "FAULTPRINT_TOKEN_FILE", "file holding the bearer token sent on every call"),
)


# What to check when a call fails with these codes.
_HINTS = {
    "UNAVAILABLE": "is a server listening at --target (FAULTPRINT_TARGET), and do TLS settings match it?",
    "UNAUTHENTICATED": "give --token-file or a client certificate (--tls-cert, --tls-key) the server knows",
    "PERMISSION_DENIED": "the server's access policy does not give this caller that method or network",
    "DEADLINE_EXCEEDED": "the server is overloaded or far away; retry",
}


def main(argv: list[str] | None = None) -> int:
    """Runs a command; a call the server refuses ends in one line: its status, message and a hint."""
    import grpc

    try:
        return _run(argv)
    except grpc.RpcError as exc:
        code = exc.code().name
        hint = f" ({_HINTS[code]})" if code in _HINTS else ""
        print(f"faultprint-client: {code}: {exc.details()}{hint}", file=sys.stderr)
        return 1


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="faultprint-client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"faultprint-client {__version__}")
    parser.add_argument("--target", default=os.environ.get("FAULTPRINT_TARGET", "127.0.0.1:50051"))
    for flag, variable, meaning in _SECURITY_FLAGS:
        parser.add_argument(flag, help=f"{meaning} (variable {variable})")
    commands = parser.add_subparsers(dest="command", required=True)
    enrol = commands.add_parser("enrol", help="enrol reference cases from a row file, or simulated ones")
    probe = commands.add_parser("probe", help="simulate probe agents streaming windows")
    agent = commands.add_parser("agent", help="stream per-minute rows to the server, live")
    agent.add_argument(
        "--rows", required=True, help="a row file, or a directory an exporter writes row files to"
    )
    agent.add_argument("--targets", help="comma-separated replicas to use in turn (default: --target)")
    agent.add_argument("--follow", action="store_true", help="keep watching the directory for new files")
    agent.add_argument("--minutes-per-second", type=float, default=0.0,
                       help="traffic minutes per second (0: as fast as the server takes them)")  # fmt: skip
    agent.add_argument("--batch-minutes", type=int, default=500, help="node-minutes per request")
    incidents = commands.add_parser("incidents", help="open incidents, a node's history, or acknowledge")
    incidents.add_argument("--network", required=True)
    incidents.add_argument("--node", help="show this node's condition and incident history")
    incidents.add_argument("--acknowledge", metavar="INCIDENT_ID", help="acknowledge this incident")
    incidents.add_argument("--operator", default=os.environ.get("USER", "operator"))
    incidents.add_argument("--note", default="")
    commands.add_parser("info", help="show the serving model")
    baseline = commands.add_parser("baseline", help="show a network's baseline, or learn it from traffic")
    baseline.add_argument("--network", required=True)
    baseline.add_argument("--learn-rows", help="row file whose traffic (every node, labels unread) the "
                          "baseline is learned from, replacing the traffic added before")  # fmt: skip
    baseline.add_argument(
        "--from", dest="from_time", help="with --learn-rows: first minute (ISO 8601 UTC, or minute)"
    )
    baseline.add_argument("--to", dest="to_time", help="with --learn-rows: end (exclusive)")
    baseline.add_argument(
        "--stride-minutes", type=int, default=60, help="with --learn-rows: minutes between windows"
    )
    for sub in (enrol, probe):
        sub.add_argument("--network", default="island-apac", help=f"simulated: one of {', '.join(PROFILES)}")
        sub.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated (simulated)")
        sub.add_argument("--seed", type=int, default=11)
    enrol.add_argument("--windows-per-case", type=int, default=1, help="simulated windows per case")
    enrol.add_argument(
        "--normal-windows", type=int, help="simulated windows of the normal case (its baseline)"
    )
    enrol.add_argument("--rows", help="the operator's row file (.parquet/.csv, see traffic/rows.py)")
    enrol.add_argument("--node", help="with --rows: the node whose windows to enrol")
    enrol.add_argument(
        "--from", dest="from_time", help="with --rows: first minute, ISO 8601 UTC or minute count"
    )
    enrol.add_argument(
        "--to", dest="to_time", help="with --rows: end (exclusive), ISO 8601 UTC or minute count"
    )
    enrol.add_argument("--label", help="with --rows: normal, or the fault the span shows")
    enrol.add_argument("--stride-minutes", type=int, default=60, help="with --rows: minutes between windows")
    enrol.add_argument("--description", default="", help="with --rows: free text, such as the incident")
    probe.add_argument("--agents", type=int, default=4)
    probe.add_argument("--windows-per-agent", type=int, default=10)
    probe.add_argument("--quiet", action="store_true", help="print only the confusion table")
    args = parser.parse_args(argv)
    for flag, variable, _ in _SECURITY_FLAGS:  # every command's channels read these
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value:
            os.environ[variable] = value

    if args.command == "info":
        from faultprint.client.client import FaultprintClient

        with FaultprintClient(args.target) as client:
            print(client.model_info())
        return 0
    if args.command == "agent":
        return _agent(args)
    if args.command == "incidents":
        return _incidents(args)
    if args.command == "baseline" and args.learn_rows:
        return _learn_baseline(args, parser)
    if args.command == "baseline":
        return _baseline(args.target, args.network)
    if args.command == "enrol" and args.rows:
        return _enrol_rows(args, parser)
    if args.network not in PROFILES:
        parser.error(f"--network {args.network!r} is not a simulated network; enrol real ones with --rows")
    conditions = tuple(args.conditions.split(","))
    if args.command == "enrol":
        from faultprint.client.probe import enrol_one_per_condition

        ids = enrol_one_per_condition(
            args.target, args.network, conditions, args.seed, args.windows_per_case, args.normal_windows
        )
        print(f"enrolled {len(ids)} reference cases in {args.network}: {', '.join(ids)}")
        return 0
    from faultprint.client.probe import ProbeOptions, run_probes

    options = ProbeOptions(
        target=args.target, network=args.network, agents=args.agents,
        windows_per_agent=args.windows_per_agent, conditions=conditions,
        seed=args.seed, verbose=not args.quiet,
    )  # fmt: skip
    tally = asyncio.run(run_probes(options))
    print(tally.table())
    return 0


def _agent(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from faultprint.client.agent import AgentOptions, ProbeAgent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    targets = tuple((args.targets or args.target).split(","))
    options = AgentOptions(targets, Path(args.rows), args.batch_minutes, args.minutes_per_second,
                           follow=args.follow)  # fmt: skip
    tally = asyncio.run(ProbeAgent(options).run())
    print(tally.summary())
    for message in tally.refusals:
        print(f"refused: {message}")
    return 0


def _incidents(args: argparse.Namespace) -> int:
    from faultprint.client.client import FaultprintClient

    with FaultprintClient(args.target) as client:
        if args.acknowledge:
            shown = [client.acknowledge_incident(args.network, args.acknowledge, args.operator, args.note)]
        elif args.node:
            condition = client.node_condition(args.network, args.node)
            print(f"{args.node}: {condition.label} since {condition.since.ToJsonString()}, "
                  f"recent: {' '.join(condition.recent_labels)}")  # fmt: skip
            shown = client.node_incidents(args.network, args.node)
        else:
            shown = client.open_incidents(args.network)
    for incident in shown:
        end = incident.end_time.ToJsonString() if incident.HasField("end_time") else "open"
        why = ", ".join(f"{d.statistic} {d.departure:+.1f}" for d in incident.explanation.from_normal)
        acked = f" acknowledged by {incident.acknowledged_by}" if incident.acknowledged_by else ""
        print(f"{incident.incident_id}  {incident.start_time.ToJsonString()} .. {end}{acked}\n    why: {why}")
    return 0


def _enrol_rows(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from faultprint.client.enrolment import Span, enrol_span, parse_minute

    missing = [f"--{n}" for n in ("node", "from_time", "to_time", "label") if not getattr(args, n)]
    if missing:
        parser.error(f"enrol --rows needs {', '.join(m.replace('_time', '') for m in missing)}")
    try:
        span = Span(args.network, args.node, parse_minute(args.from_time), parse_minute(args.to_time),
                    args.stride_minutes)  # fmt: skip
        ids = enrol_span(args.target, Path(args.rows), span, args.label, args.description)
    except ValueError as exc:
        print(f"enrol: {exc}", file=sys.stderr)
        return 2
    print(f"enrolled {len(ids)} {args.label} cases in {args.network} from {args.rows}: {', '.join(ids)}")
    return 0


def _learn_baseline(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from faultprint.client.enrolment import add_traffic, parse_minute

    if not (args.from_time and args.to_time):
        parser.error("baseline --learn-rows needs --from and --to")
    try:
        start, end = parse_minute(args.from_time), parse_minute(args.to_time)
        count, kept = add_traffic(
            args.target, Path(args.learn_rows), args.network, start, end, args.stride_minutes
        )
    except ValueError as exc:
        print(f"baseline: {exc}", file=sys.stderr)
        return 2
    print(f"the baseline of {args.network} is learned from {count} windows of its traffic ({kept} batches) "
          "and its normal cases")  # fmt: skip
    return _baseline(args.target, args.network)


def _baseline(target: str, network: str) -> int:
    from faultprint.client.client import FaultprintClient

    with FaultprintClient(target) as client:
        baseline = client.network_baseline(network)
    learned = baseline.update_time.ToJsonString()
    print(f"network {baseline.network} under model {baseline.model_version}: {baseline.minutes} minutes "
          f"of {baseline.normal_case_count} normal cases and {baseline.traffic_window_count} windows of "
          f"traffic, learned {learned}")  # fmt: skip
    print(f"{'statistic':<44} {'centre':>10} {'scale':>8}   (signed log1p units)")
    for s in baseline.statistics:
        print(f"{s.name:<44} {s.centre:>10.3f} {s.scale:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
