"""Trainer command line: ``python -m trainer simulate|train|publish``.

simulate write labelled per-minute probe rows (Parquet or CSV, see trainer/rows.py)
         for simulated nodes, with the damage real probe exports have
train    train the encoder on simulated windows, or on row files (--rows), and
         write a versioned artifact directory
publish  store an artifact in the Redis registry and promote it; servers that follow
         the registry swap to it without dropping a request
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np


def _simulate(args: argparse.Namespace) -> int:
    from trainer.rows import Rows, write_rows
    from trainer.simulator import PROFILES, simulate_node_rows

    start = args.start_minute
    parts = [
        simulate_node_rows(
            PROFILES[network],
            f"pcscf-{n}",
            start,
            args.days * 1440,
            seed=args.seed + 1000 * i + n,
            faults_per_day=args.faults_per_day,
        )
        for i, network in enumerate(args.networks.split(","))
        for n in range(args.nodes)
    ]
    rows = Rows.concat(parts)
    write_rows(rows, Path(args.out))
    print(f"wrote {len(rows)} rows of {len(parts)} nodes to {args.out}")
    return 0


def _windows_from_rows(paths: list[str], conditions: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    from trainer.rows import Rows, read_rows
    from trainer.windowing import make_windows

    parts = [read_rows(Path(p)) for p in paths]
    unlabelled = [p for r, p in zip(parts, paths, strict=True) if r.label is None]
    if unlabelled:
        raise SystemExit(f"{', '.join(unlabelled)}: no label column; training needs labelled rows")
    merged = Rows.merge(parts)
    windows, labels, report = make_windows(merged)
    logging.info("windowing: %s", report.summary())
    known = np.isin(labels, conditions)
    if not known.all():
        logging.info("skipping %d windows whose labels the config does not train on: %s",
                     (~known).sum(), sorted(map(str, set(labels[~known]))))  # fmt: skip
    return windows[known], labels[known]


def _train(args: argparse.Namespace) -> int:
    from trainer.config import TrainingConfig, with_overrides
    from trainer.export import export
    from trainer.simulator import PROFILES, simulate_windows
    from trainer.training import train

    config = with_overrides(TrainingConfig.load(args.config), epochs=args.epochs, seed=args.seed)
    if args.rows:
        windows, labels = _windows_from_rows(args.rows, config.conditions)
        logging.info("training on %d windows from %s", len(labels), ", ".join(args.rows))
        print(export(train(config, windows, labels), config, Path(args.out)))
        return 0
    parts = [
        simulate_windows(
            PROFILES[name],
            config.conditions,
            config.windows_per_condition,
            config.seed + i,
            config.tower.steps,
        )
        for i, name in enumerate(config.networks)
    ]
    windows = np.concatenate([w for w, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    logging.info("training on %d windows of %s", len(labels), ", ".join(config.networks))
    result = train(config, windows, labels)
    out = export(result, config, Path(args.out))
    print(out)
    return 0


def _publish(args: argparse.Namespace) -> int:
    import redis

    from server.model_registry import publish_artifact
    from server.redis_layout import RedisLayout

    client = redis.Redis.from_url(args.redis_url)
    metadata = publish_artifact(
        client, RedisLayout(args.redis_prefix), Path(args.artifact), not args.no_promote
    )
    state = "published" if args.no_promote else "published and promoted"
    print(f"{state} model {metadata.version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="faultprint-trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and export a model artifact")
    train.add_argument("--config", default="small", help="preset (tiny, small, original) or JSON file")
    train.add_argument("--out", default="artifacts", help="directory that receives <version>/")
    train.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    train.add_argument("--seed", type=int, default=None, help="override the config's seed")
    train.add_argument("--rows", nargs="+", help="labelled row files (.parquet/.csv) instead of simulation")
    train.set_defaults(func=_train)
    simulate = commands.add_parser("simulate", help="write simulated labelled per-minute probe rows")
    simulate.add_argument("--out", required=True, help="file to write: .parquet or .csv")
    simulate.add_argument("--networks", default="metro-eu,rural-eu", help="comma-separated profiles")
    simulate.add_argument("--nodes", type=int, default=4, help="nodes per network")
    simulate.add_argument("--days", type=int, default=1)
    simulate.add_argument("--faults-per-day", type=float, default=6.0)
    simulate.add_argument("--start-minute", type=int, default=29_400_000, help="UTC minute since 1970")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.set_defaults(func=_simulate)
    publish = commands.add_parser("publish", help="publish an artifact to the Redis registry")
    publish.add_argument("artifact", help="artifact directory written by `train`")
    publish.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    publish.add_argument("--redis-prefix", default=os.environ.get("FAULTPRINT_REDIS_PREFIX", "faultprint"))
    publish.add_argument(
        "--no-promote", action="store_true", help="store without making it the serving version"
    )
    publish.set_defaults(func=_publish)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
