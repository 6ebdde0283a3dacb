"""Trainer command line: ``python -m trainer train|publish``.

train    simulate traffic, train the encoder and write a versioned artifact directory
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


def _train(args: argparse.Namespace) -> int:
    from trainer.config import TrainingConfig, with_overrides
    from trainer.export import export
    from trainer.simulator import PROFILES, simulate_windows
    from trainer.training import train

    config = with_overrides(TrainingConfig.load(args.config), epochs=args.epochs, seed=args.seed)
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
    train.set_defaults(func=_train)
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
