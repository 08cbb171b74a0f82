"""Model subcommands: train, evaluate, info."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a multi-exit model from a config and write its bundle",
        description="Train jointly (all exits, distillation, feature transfer), calibrate every exit on "
        "the validation split, profile every exit criterion and write a stage bundle. Resumes from "
        "OUT/checkpoint.pt when it exists.",
    )
    train.add_argument("config", type=Path, help="training config (TOML), e.g. configs/train/mnist.toml")
    train.add_argument("--out", type=Path, help="run directory (default: runs/<config name>)")
    train.add_argument("--bundle", type=Path, help="where to write the bundle (default: OUT/bundle)")
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument(
        "--seed", type=int, help="override train.seed (the default run directory gets a -seed<N> suffix)"
    )
    train.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if a checkpoint exists"
    )
    train.add_argument("--freeze-backbone", action="store_true", help="train only the exit heads")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument(
        "--device", default="cpu", help="where the optimisation runs: cpu (default) or cuda[:N]"
    )
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="offline accuracy-versus-compute report of a bundle",
        description="Cache every exit's outputs on the test split(s), sweep the thresholds of every "
        "criterion and write report.json, report.md and one PNG plot per split.",
    )
    evaluate.add_argument("bundle", type=Path, help="bundle directory")
    evaluate.add_argument("--config", type=Path, help="training config naming the data set (default: mnist)")
    evaluate.add_argument("--out", type=Path, required=True, help="report directory")
    evaluate.set_defaults(handler=run_evaluate)

    info = commands.add_parser("info", help="show a bundle's manifest summary (verifies hashes)")
    info.add_argument("bundle", type=Path)
    info.set_defaults(handler=run_info)


def run_train(args: argparse.Namespace) -> int:
    from distree_mqtt.evaluation.calibrate import export_bundle
    from distree_mqtt.model.training import TrainConfig, train

    config = TrainConfig.from_toml(args.config)
    overrides = train_overrides(args)
    if overrides:
        config = config.with_train(**overrides)
    out = args.out or default_run_directory(config.name, args.seed)
    trained = train(config, out, resume=not args.no_resume, show_progress=not args.quiet, device=args.device)
    manifest = export_bundle(trained, args.bundle or out / "bundle", show_progress=not args.quiet)
    summary = {
        "bundle": str(args.bundle or out / "bundle"),
        "model_id": manifest.model_id,
        "content_hash": manifest.content_hash,
        "val_accuracy_per_exit": trained.validation,
        "temperatures": [stage.temperature for stage in manifest.stages],
        "default_criterion": manifest.exit_policy.default_criterion,
        "train_seconds": manifest.training["train_seconds"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `train` fields the command line replaces in the config file."""
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.freeze_backbone:
        overrides["freeze_backbone"] = True
    return overrides


def default_run_directory(name: str, seed: int | None) -> Path:
    """runs/<name>, or runs/<name>-seed<N> for a seed override, so a second seed never meets the
    first one's checkpoint."""
    return Path("runs") / (name if seed is None else f"{name}-seed{seed}")


def run_evaluate(args: argparse.Namespace) -> int:
    from distree_mqtt.evaluation.report import evaluate_bundle

    report = evaluate_bundle(args.bundle, args.config, args.out)
    print(report.markdown_path.read_text())
    return 0


def run_info(args: argparse.Namespace) -> int:
    from distree_mqtt.bundle import load_manifest, load_stage

    manifest = load_manifest(args.bundle)
    for index in range(len(manifest.stages)):
        load_stage(args.bundle, index, manifest)
    print(f"{manifest.model_id}  content hash {manifest.content_hash[:16]}  (all stage hashes verified)")
    print(
        f"input {manifest.input.color} {list(manifest.input.shape)}, classes: {', '.join(manifest.input.class_names)}"
    )
    for stage in manifest.stages:
        print(
            f"  stage {stage.index}: {stage.input_shape} -> {stage.output_shape}, "
            f"{stage.body_macs / 1e6:.2f} M MACs + head {stage.head_macs / 1e6:.2f} M, "
            f"{stage.parameters} parameters, T={stage.temperature:.3f}"
        )
    policy = manifest.exit_policy
    print(f"default exit criterion: {policy.default_criterion}")
    point = policy.operating_points.get(policy.default_criterion)
    if point is not None:
        thresholds = ", ".join("never" if t is None else f"{t:.4g}" for t in point.thresholds)
        print(
            f"  operating point: thresholds [{thresholds}], "
            f"{100 * (1 - point.expected_macs / manifest.no_exit_macs):.1f}% fewer MACs, validation "
            f"loss {100 * point.loss:.2f} ± {100 * point.loss_standard_error:.2f} points"
        )
    return 0
