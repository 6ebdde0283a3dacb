"""Trainer command line: ``python -m faultprint.trainer <command>``.

simulate  write labelled per-minute probe rows (Parquet or CSV, see traffic/rows.py)
          for simulated nodes, with the damage real probe exports have
train     train the encoder on simulated windows, or on row files (--rows), evaluate it
          one-shot on a network it never saw, and write a versioned artifact directory
evaluate  the one-shot evaluation of an artifact, against the raw 1-NN baseline
evaluate-transfer
          the transfer protocol (trainer/protocol.py) on labelled rows of networks the
          model never saw: first day as baseline and references, later days diagnosed
publish   store an artifact in the Redis registry as the candidate (replicas shadow it),
          or as the stable version with --promote; refused if it evaluates worse than
          the stable version on simulated traffic or on any registered evaluation set
          (--eval-rows registers one), unless --force
eval-sets list or remove the registered evaluation sets
keygen    make an Ed25519 key pair: the trainer signs what it publishes with the private
          key (--signing-key, FAULTPRINT_SIGNING_KEY); replicas trust the public one
          (--model-trusted-keys) and serve only versions it signed
sign      sign an artifact directory (signature.json) for a replica that serves it as it is
promote   make the candidate (or a named version) the stable one on every replica
rollback  restore the version that served before the stable one
withdraw  stop shadowing the candidate
status    the stable and candidate versions, the shadow agreement, what each replica serves
cases     export a deployment's reference cases (windows included) to a Parquet file, or
          import such a file: the way back from a Redis that lost its data
migrate-keys  rename the keys of a deployment from before hash tags to the Redis Cluster
          layout, replicas stopped (--dry-run lists them)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import redis.exceptions

from faultprint import __version__
from faultprint.encoder.artifact import ArtifactError
from faultprint.registry.eval_sets import EvalSetError
from faultprint.registry.models import RolloutError
from faultprint.registry.signing import SigningKeyError
from faultprint.server.references.backup import BackupError
from faultprint.server.rpc.errors import FaultprintError
from faultprint.trainer.protocol import CASE_MATCHING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from faultprint.registry.connection import SyncRedis
    from faultprint.registry.layout import RedisLayout
    from faultprint.registry.models import RolloutStatus
    from faultprint.traffic.windowing import WindowingOptions, WindowSet
    from faultprint.trainer.config import TrainingConfig
    from faultprint.trainer.evaluation import EvaluationOptions, EvaluationReport, EvaluationSplit


def _simulate(args: argparse.Namespace) -> int:
    from faultprint.traffic.contract import count_out_of_contract, describe_counts
    from faultprint.traffic.rows import Rows, write_rows
    from faultprint.traffic.simulator import PROFILES, simulate_node_rows

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
    contract = describe_counts(count_out_of_contract(rows.values, "rows"))
    print(f"data contract (docs/data-contract.md): {contract}")
    return 0


def _windows_from_rows(paths: list[str], conditions: tuple[str, ...],
                       network: str | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Labelled windows of the row files (of one network only, if given)."""
    cut = _cut_rows(paths, conditions, network)
    return cut.windows, cut.labels


def _cut_rows(paths: list[str], conditions: tuple[str, ...], network: str | None = None,
              windowing: WindowingOptions | None = None) -> WindowSet:  # fmt: skip
    """Labelled windows of the row files, with their origin (of one network only, if given)."""
    from faultprint.trainer.networks import labelled_windows

    try:
        return labelled_windows([Path(p) for p in paths], conditions, network, windowing)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def _training_data(args: argparse.Namespace,
                   config: TrainingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
    """(windows as the tower reads them, labels, the network of each window or None)."""
    from faultprint.traffic.simulator import PROFILES, simulate_windows
    from faultprint.traffic.windowing import WindowingOptions
    from faultprint.trainer.networks import normalise_by_first_day, simulate_random_networks

    if args.rows or config.random_networks:
        windowing = WindowingOptions(min_onset_minutes=config.onset_minutes)
        cut = (_cut_rows(args.rows, config.conditions, windowing=windowing) if args.rows
               else simulate_random_networks(config.random_networks, config.nodes_per_network,
                                             config.days_per_network, config.faults_per_day,
                                             config.conditions, config.seed,
                                             windowing=windowing))  # fmt: skip
        source = ", ".join(args.rows) if args.rows else f"{config.random_networks} random networks"
        logging.info("training on %d windows of %d networks from %s", len(cut.labels),
                     len(set(cut.network)), source)  # fmt: skip
        windows = normalise_by_first_day(cut) if config.tower.network_baseline else cut.windows
        return windows, cut.labels, cut.network
    if args.eval_network in config.networks and not args.eval_rows:
        raise SystemExit(f"--eval-network {args.eval_network} is a training network; pick an unseen one")
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
    logging.info("training on %d windows of %s", sum(len(w) for w, _ in parts), ", ".join(config.networks))
    return np.concatenate([w for w, _ in parts]), np.concatenate([lab for _, lab in parts]), None


def _evaluation_split(rows: list[str] | None, options: EvaluationOptions,
                      conditions: tuple[str, ...]) -> EvaluationSplit | None:  # fmt: skip
    """The evaluation network's windows from row files, or None to simulate them."""
    from faultprint.trainer.evaluation import EvaluationSplit

    if not rows:
        return None
    windows, labels = _windows_from_rows(rows, conditions, options.network)
    rng = np.random.default_rng(options.seed)
    return EvaluationSplit.from_windows(
        windows, labels, options.reference_pool_per_condition, rng, options.test_windows_per_condition
    )


def _train(args: argparse.Namespace) -> int:
    from faultprint.trainer.config import TrainingConfig, with_overrides
    from faultprint.trainer.evaluation import EvaluationOptions, evaluate_tower, write_evaluation
    from faultprint.trainer.export import export, new_version
    from faultprint.trainer.training import TrainingRun, train

    config = with_overrides(TrainingConfig.load(args.config), epochs=args.epochs, seed=args.seed)
    windows, labels, networks = _training_data(args, config)
    version = new_version()
    out_dir = Path(args.out) / version
    run = TrainingRun(
        log_dir=None if args.no_tensorboard else out_dir / "tensorboard",
        progress_bar=sys.stdout.isatty() and not args.no_progress,
    )
    result = train(config, windows, labels, run, networks)
    transfer = _transfer_evaluation(result.tower, result.distance_threshold, config, args.eval_rows)
    if config.tower.network_baseline:
        # The simulated one-shot split reads raw windows; this tower is scored by the protocol only.
        export(result, config, Path(args.out), args.parent, None, version, transfer)
        print(_transfer_summary(transfer), file=sys.stderr)
        print(out_dir)
        return 0
    options = EvaluationOptions(network=args.eval_network)
    split = _evaluation_split(args.eval_rows, options, config.conditions)
    report, split = evaluate_tower(result.tower, result.distance_threshold, config.conditions, options,
                                   config.tower.steps, split)  # fmt: skip
    export(result, config, Path(args.out), args.parent, report.to_dict(), version, transfer)
    files = write_evaluation(report, split, result.tower, version, result.history, out_dir / "evaluation")
    logging.info("evaluation: %s", ", ".join(str(f) for f in files))
    print(_evaluation_summary(report), file=sys.stderr)
    print(out_dir)
    return 0


def _transfer_evaluation(tower: object, threshold: float, config: TrainingConfig,
                         eval_rows: list[str] | None) -> dict[str, object] | None:  # fmt: skip
    """The transfer protocol on every network of eval_rows and, for a tower that reads network
    baselines, on random simulated networks it never trained on; None when there is neither."""
    from faultprint.trainer.networks import evaluation_networks
    from faultprint.trainer.protocol import ProtocolOptions, evaluate_tower_on, reports_to_dict

    options = ProtocolOptions()
    reports = []
    if config.tower.network_baseline:
        cut = evaluation_networks(config.faults_per_day, config.conditions, config.seed)
        reports += evaluate_tower_on(cut, tower, threshold, True, options)
    if eval_rows:
        reports += evaluate_tower_on(_cut_rows(eval_rows, config.conditions), tower, threshold,
                                     config.tower.network_baseline, options)  # fmt: skip
    return reports_to_dict(reports, options) if reports else None


def _transfer_summary(transfer: dict[str, object] | None) -> str:
    from faultprint.trainer.protocol import reports_from_dict

    if transfer is None:
        return "no transfer evaluation"
    return "transfer protocol (k=1, balanced accuracy, model / strong baseline / false alarms): " + ", ".join(
        f"{r.network} {r.score().balanced_accuracy:.3f} / {r.score('strong_baseline').balanced_accuracy:.3f}"
        f" / {r.score().false_alarms:.3f}"
        for r in reports_from_dict(transfer)
    )


def _evaluation_summary(report: EvaluationReport) -> str:
    from faultprint.trainer.evaluation import BASELINE, MODEL

    model, base = report.methods[MODEL], report.methods[BASELINE]
    shots = ", ".join(f"k={k}: model {model.accuracy[k]:.3f} / raw 1-NN {base.accuracy[k]:.3f}"
                      for k in model.accuracy)  # fmt: skip
    return f"one-shot evaluation on {report.network} (unseen): {shots}"


def _evaluate(args: argparse.Namespace) -> int:
    from faultprint.encoder.artifact import load_tower, read_metadata
    from faultprint.trainer.evaluation import (
        EvaluationOptions,
        evaluate_tower,
        trained_conditions,
        write_evaluation,
    )

    artifact = Path(args.artifact)
    metadata = read_metadata(artifact)
    tower = load_tower(artifact, metadata)
    conditions = trained_conditions(metadata.training)
    options = EvaluationOptions(network=args.network, trials=args.trials)
    split = _evaluation_split(args.rows, options, conditions)
    report, split = evaluate_tower(
        tower, metadata.distance_threshold, conditions, options, metadata.steps, split
    )
    out = Path(args.out) if args.out else artifact / "evaluation"
    history = metadata.training.get("history")
    write_evaluation(report, split, tower, metadata.version, history, out)
    print((out / "evaluation.md").read_text())
    return 0


def _evaluate_transfer(args: argparse.Namespace) -> int:
    from faultprint.encoder.artifact import load_tower, read_metadata
    from faultprint.trainer.evaluation import trained_conditions
    from faultprint.trainer.protocol import ProtocolOptions, evaluate_tower_on, report_markdown, write_reports

    artifact = Path(args.artifact)
    metadata = read_metadata(artifact)
    tower = load_tower(artifact, metadata)
    options = ProtocolOptions(draws=args.draws, node_samples=args.node_samples, seed=args.seed,
                              case_matching=args.case_matching)  # fmt: skip
    cut = _cut_rows(args.rows, trained_conditions(metadata.training))
    reports = evaluate_tower_on(cut, tower, metadata.distance_threshold, metadata.network_baseline, options)
    out = Path(args.out) if args.out else artifact / "evaluation"
    write_reports(reports, options, metadata.version, out)
    print(report_markdown(reports, options, metadata.version))
    return 0


def _registry(args: argparse.Namespace) -> tuple[SyncRedis, RedisLayout]:
    from faultprint.registry.connection import connect
    from faultprint.registry.layout import RedisLayout

    return connect(args.redis_url), RedisLayout(args.redis_prefix)


def _signing_key(args: argparse.Namespace) -> Ed25519PrivateKey | None:
    """The key --signing-key (or FAULTPRINT_SIGNING_KEY) names; None, with a warning, if none."""
    from faultprint.registry.signing import load_private_key

    if args.signing_key:
        return load_private_key(Path(args.signing_key))
    print("warning: no --signing-key (or FAULTPRINT_SIGNING_KEY): publishing unsigned; replicas with "
          "trusted keys (--model-trusted-keys) will reject it", file=sys.stderr)  # fmt: skip
    return None


def _publish(args: argparse.Namespace) -> int:
    from faultprint.registry import eval_sets
    from faultprint.registry.signing import key_id
    from faultprint.trainer.evaluation import EvaluationOptions
    from faultprint.trainer.publishing import PublishRefused, publish_gated

    signing_key = _signing_key(args)
    client, layout = _registry(args)
    for path in args.eval_rows or []:
        entry = eval_sets.register(client, layout, Path(path))
        print(f"registered evaluation set {entry.path} (sha256 {entry.sha256[:12]})")
    try:
        comparison = publish_gated(client, layout, Path(args.artifact), args.promote, args.force,
                                   EvaluationOptions(network=args.eval_network), signing_key)  # fmt: skip
    except PublishRefused as exc:
        print(exc, file=sys.stderr)
        return 3
    state = "published and promoted" if args.promote else "published as candidate (replicas shadow it)"
    print(f"{state}: {comparison.candidate}; {comparison.summary()}" + (" (forced)" if args.force else ""))
    print(f"signed by key {key_id(signing_key.public_key())}" if signing_key else "unsigned")
    if not args.promote and comparison.stable is None:
        print("no version is stable yet, so nothing serves: `promote` makes this one serve")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from faultprint.registry.signing import generate_key_pair

    private, public, key = generate_key_pair(Path(args.out))
    print(f"key id {key}")
    print(f"  private, the trainer's --signing-key (FAULTPRINT_SIGNING_KEY); keep it secret: {private}")
    print(f"  public, for the servers' --model-trusted-keys (FAULTPRINT_MODEL_TRUSTED_KEYS): {public}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from faultprint.registry.signing import load_private_key, sign_directory

    if not args.signing_key:
        print("sign: name the key with --signing-key or FAULTPRINT_SIGNING_KEY", file=sys.stderr)
        return 2
    path = sign_directory(Path(args.artifact), load_private_key(Path(args.signing_key)))
    print(f"wrote {path}")
    return 0


def _eval_sets(args: argparse.Namespace) -> int:
    import time

    from faultprint.registry import eval_sets

    client, layout = _registry(args)
    if args.remove:
        removed = eval_sets.unregister(client, layout, Path(args.remove))
        print(f"removed {args.remove}" if removed else f"{args.remove} was not registered")
        return 0 if removed else 2
    entries = eval_sets.registered(client, layout)
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(e.registered_unix_s))
        print(f"{e.path}  sha256 {e.sha256[:12]}  registered {when}")
    if not entries:
        print("no evaluation sets registered: `publish --eval-rows FILE` registers one")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from faultprint.registry.models import rollout_status
    from faultprint.trainer.publishing import validate_and_promote

    client, layout = _registry(args)
    version = args.version or rollout_status(client, layout).candidate
    if not version:
        print("no candidate to promote; name a version", file=sys.stderr)
        return 2
    replaced = validate_and_promote(client, layout, version)
    print(f"promoted {version} (replaces {replaced or 'nothing'})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from faultprint.registry.models import roll_back

    client, layout = _registry(args)
    print(f"rolled back to {roll_back(client, layout, args.reason)}")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    from faultprint.registry.models import set_candidate

    client, layout = _registry(args)
    previous = set_candidate(client, layout, "", reason=args.reason)
    print(f"withdrew candidate {previous}" if previous else "there was no candidate")
    return 0


def _status(args: argparse.Namespace) -> int:
    from faultprint.registry.models import rollout_status

    client, layout = _registry(args)
    status = rollout_status(client, layout)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
        return 0
    print(format_status(status))
    return 0


def _migrate_keys(args: argparse.Namespace) -> int:
    from faultprint.registry.migration import MigrationError, migrate, report_lines

    client, layout = _registry(args)
    try:
        result = migrate(client, layout.prefix, dry_run=args.dry_run)
    except MigrationError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report_lines(result)))
    return 1 if result.conflicts else 0


def format_status(status: RolloutStatus) -> str:
    def figure(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [f"stable:    {status.stable or '-'}", f"candidate: {status.candidate or '-'}",
             f"history:   {', '.join(status.history) or '-'}", "", "versions (newest first):"]  # fmt: skip
    for v in status.versions:
        reason = f"  reason: {v.reason}" if v.reason else ""
        signer = f"key {v.signing_key_id}" if v.signing_key_id else "unsigned"
        lines.append(f"  {v.version:<28} {v.state:<12} one-shot {figure(v.one_shot_accuracy)} "
                     f"(raw 1-NN {figure(v.baseline_accuracy)})  {signer}{reason}")  # fmt: skip
    if status.candidate:
        windows, same = status.shadow.get("windows", 0), status.shadow.get("same", 0)
        share = f"{same / windows:.3f}" if windows else "-"
        lines += ["", f"shadow agreement of {status.candidate}: {same} of {windows} windows keep their "
                  f"diagnosis ({share})"]  # fmt: skip
        changes = sorted(((n, k) for k, n in status.shadow.items() if ">" in k), reverse=True)
        lines += [f"  {k.replace('>', ' -> ')}: {n}" for n, k in changes]
    lines += ["", "replicas:"]
    for replica, report in sorted(status.replicas.items()):
        stale = "  (stale)" if report["stale"] else ""
        name = report.get("address") or replica[:8]
        if report.get("worker") is not None:  # one of several workers sharing the address
            name += f" w{report['worker']}"
        lines.append(f"  {name:<26} serving {report.get('serving') or '-'}"
                     f"  shadowing {report.get('candidate') or '-'}{stale}")  # fmt: skip
    return "\n".join(lines)


def _cases(args: argparse.Namespace) -> int:
    import asyncio

    from faultprint.registry.connection import connect_async
    from faultprint.registry.layout import RedisLayout
    from faultprint.server.references.backup import export_cases, import_cases
    from faultprint.server.references.store import ReferenceStore

    async def run() -> str:
        client = await connect_async(args.redis_url)
        store = ReferenceStore(client, RedisLayout(args.redis_prefix), origin="operator")
        try:
            if args.action == "export":
                done = await export_cases(store, Path(args.file), args.network or None)
                return f"exported {done.cases} reference cases of {done.networks} networks to {args.file}"
            done = await import_cases(store, Path(args.file))
            return (
                f"imported {done.cases} reference cases of {done.networks} networks from {args.file} "
                f"({done.skipped} left alone: their ids are taken); store identity {done.store_identity}"
            )
        finally:
            await client.aclose()

    print(asyncio.run(run()))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="faultprint-trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"faultprint-trainer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train and export a model artifact")
    train.add_argument(
        "--config", default="small", help="preset (tiny, small, transfer, original) or JSON file"
    )
    train.add_argument("--out", default="artifacts", help="directory that receives <version>/")
    train.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    train.add_argument("--seed", type=int, default=None, help="override the config's seed")
    train.add_argument("--rows", nargs="+", help="labelled row files (.parquet/.csv) instead of simulation")
    train.add_argument("--eval-network", default="island-apac", help="unseen network of the evaluation")
    train.add_argument(
        "--eval-rows", nargs="+", help="evaluate on these rows' --eval-network, not simulation"
    )
    train.add_argument("--parent", help="the version this model is trained to replace")
    train.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard logs")
    train.add_argument("--no-progress", action="store_true", help="one line per epoch, no progress bar")
    train.set_defaults(func=_train)
    evaluate = commands.add_parser("evaluate", help="one-shot evaluation of an artifact")
    evaluate.add_argument("artifact", help="artifact directory")
    evaluate.add_argument("--network", default="island-apac", help="network to enrol and diagnose on")
    evaluate.add_argument("--trials", type=int, default=5, help="random draws of the references")
    evaluate.add_argument("--rows", nargs="+", help="labelled row files holding --network, not simulation")
    evaluate.add_argument("--out", help="directory for the report and plots (default ARTIFACT/evaluation)")
    evaluate.set_defaults(func=_evaluate)
    transfer = commands.add_parser(
        "evaluate-transfer", help="the transfer protocol of an artifact on labelled rows of unseen networks"
    )
    transfer.add_argument("artifact", help="artifact directory")
    transfer.add_argument(
        "--rows", nargs="+", required=True, help="labelled row files; every network is scored"
    )
    transfer.add_argument("--draws", type=int, default=5, help="draws of the enrolled fault windows per k")
    transfer.add_argument(
        "--node-samples", type=int, default=5, help="bootstrap samples of the nodes per draw"
    )
    transfer.add_argument("--seed", type=int, default=2026)
    transfer.add_argument(
        "--case-matching", choices=CASE_MATCHING, default=CASE_MATCHING[0],
        help="match a fault case of k windows by its nearest example or prototype",
    )  # fmt: skip
    transfer.add_argument("--out", help="directory for transfer.json and .md (default ARTIFACT/evaluation)")
    transfer.set_defaults(func=_evaluate_transfer)
    simulate = commands.add_parser("simulate", help="write simulated labelled per-minute probe rows")
    simulate.add_argument("--out", required=True, help="file to write: .parquet or .csv")
    simulate.add_argument("--networks", default="metro-eu,rural-eu", help="comma-separated profiles")
    simulate.add_argument("--nodes", type=int, default=4, help="nodes per network")
    simulate.add_argument("--days", type=int, default=1)
    simulate.add_argument("--faults-per-day", type=float, default=6.0)
    simulate.add_argument("--start-minute", type=int, default=29_400_000, help="UTC minute since 1970")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.set_defaults(func=_simulate)
    registry = argparse.ArgumentParser(add_help=False)
    registry.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    registry.add_argument("--redis-prefix", default=os.environ.get("FAULTPRINT_REDIS_PREFIX", "faultprint"))
    signing = argparse.ArgumentParser(add_help=False)
    signing.add_argument("--signing-key", default=os.environ.get("FAULTPRINT_SIGNING_KEY"),
                         help="Ed25519 private key (PEM) to sign with (`keygen` makes one)")  # fmt: skip
    publish = commands.add_parser(
        "publish", parents=[registry, signing], help="publish an artifact to the registry"
    )
    publish.add_argument("artifact", help="artifact directory written by `train`")
    publish.add_argument("--promote", action="store_true", help="make it the stable version at once")
    publish.add_argument("--force", action="store_true", help="publish even if it evaluates worse")
    publish.add_argument("--eval-network", default="island-apac", help="network of the comparison")
    publish.add_argument("--eval-rows", nargs="+", help="register labelled row files of your networks: every "
                         "publish from now on is scored on them too")  # fmt: skip
    publish.set_defaults(func=_publish)
    sets = commands.add_parser(
        "eval-sets", parents=[registry], help="list or remove registered evaluation sets"
    )
    sets.add_argument("--remove", help="stop scoring new versions on this row file")
    sets.set_defaults(func=_eval_sets)
    keygen = commands.add_parser("keygen", help="make an Ed25519 key pair to sign published models with")
    keygen.add_argument("--out", required=True, help="directory for signing-key.pem and signing-key.pub.pem")
    keygen.set_defaults(func=_keygen)
    sign = commands.add_parser("sign", parents=[signing], help="sign an artifact directory served as it is")
    sign.add_argument("artifact", help="artifact directory written by `train`")
    sign.set_defaults(func=_sign)
    promote = commands.add_parser("promote", parents=[registry], help="make a version the stable one")
    promote.add_argument("version", nargs="?", help="default: the candidate")
    promote.set_defaults(func=_promote)
    rollback = commands.add_parser("rollback", parents=[registry], help="restore the previous version")
    rollback.add_argument("--reason", default="rolled back by the operator")
    rollback.set_defaults(func=_rollback)
    withdraw = commands.add_parser("withdraw", parents=[registry], help="stop shadowing the candidate")
    withdraw.add_argument("--reason", default="withdrawn by the operator")
    withdraw.set_defaults(func=_withdraw)
    status = commands.add_parser("status", parents=[registry], help="rollout status")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    migrate = commands.add_parser(
        "migrate-keys", parents=[registry], help="rename an older release's keys to the Redis Cluster layout"
    )
    migrate.add_argument("--dry-run", action="store_true", help="list what it would rename; change nothing")
    migrate.set_defaults(func=_migrate_keys)
    cases = commands.add_parser("cases", parents=[registry], help="export or import reference cases")
    cases.add_argument("action", choices=("export", "import"))
    cases.add_argument("file", help="Parquet file to write (export) or read (import)")
    cases.add_argument("--network", action="append", help="export only this network (repeatable)")
    cases.set_defaults(func=_cases)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (RolloutError, ArtifactError, BackupError, FaultprintError, EvalSetError, SigningKeyError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        print(f"{args.command}: cannot reach Redis ({exc}); start one (scripts/with-redis.sh) or set "
              "REDIS_URL / --redis-url", file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
