"""Client command line: ``python -m faultprint.client enrol|probe|info``.

enrol  enrol simulated reference windows (one case per condition) for a network
probe  run simulated probe agents that stream windows, print diagnoses and a confusion table
info   print the serving model's version and input specification
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from faultprint import __version__
from faultprint.traffic.simulator import CONDITIONS, PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faultprint-client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"faultprint-client {__version__}")
    parser.add_argument("--target", default=os.environ.get("FAULTPRINT_TARGET", "127.0.0.1:50051"))
    commands = parser.add_subparsers(dest="command", required=True)
    enrol = commands.add_parser("enrol", help="enrol one simulated reference case per condition")
    probe = commands.add_parser("probe", help="simulate probe agents streaming windows")
    commands.add_parser("info", help="show the serving model")
    for sub in (enrol, probe):
        sub.add_argument("--network", default="island-apac", choices=sorted(PROFILES))
        sub.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated")
        sub.add_argument("--seed", type=int, default=11)
    enrol.add_argument("--windows-per-case", type=int, default=1)
    probe.add_argument("--agents", type=int, default=4)
    probe.add_argument("--windows-per-agent", type=int, default=10)
    probe.add_argument("--quiet", action="store_true", help="print only the confusion table")
    args = parser.parse_args(argv)

    if args.command == "info":
        from faultprint.client.client import FaultprintClient

        with FaultprintClient(args.target) as client:
            print(client.model_info())
        return 0
    conditions = tuple(args.conditions.split(","))
    if args.command == "enrol":
        from faultprint.client.probe import enrol_one_per_condition

        ids = enrol_one_per_condition(args.target, args.network, conditions, args.seed, args.windows_per_case)
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


if __name__ == "__main__":
    sys.exit(main())
