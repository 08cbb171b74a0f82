"""Benchmark subcommands (`distree bench ...`) and the offline demo."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

CONFIG_DIR = Path("configs/train")
REPORT_DIR = Path("docs/benchmarks")


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks that write committed reports")
    kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    offline = kinds.add_parser(
        "offline",
        help="accuracy versus compute of the reference bundles (JSON, markdown, PNG)",
        description="Evaluate the shipped reference bundles on their test splits and write "
        "docs/benchmarks/offline-<model>/report.{json,md} and tradeoff-<split>.png.",
    )
    offline.add_argument("--model", choices=["mnist", "cifar10", "all"], default="all")
    offline.add_argument(
        "--out", type=Path, default=REPORT_DIR, help="report root (default: docs/benchmarks)"
    )
    offline.add_argument("--configs", type=Path, default=CONFIG_DIR, help="where <model>.toml configs live")
    offline.set_defaults(handler=run_offline)

    demo = commands.add_parser(
        "demo",
        help="show the shipped reference model's accuracy/compute trade-off",
        description="Verify the shipped MNIST reference bundle and print its offline trade-off table.",
    )
    demo.set_defaults(handler=run_demo)


def run_offline(args: argparse.Namespace) -> int:
    from distree_mqtt.evaluation.report import evaluate_bundle
    from distree_mqtt.reference import REFERENCE_MODELS, reference_bundle

    models = REFERENCE_MODELS if args.model == "all" else (args.model,)
    for name in models:
        report = evaluate_bundle(
            reference_bundle(name),
            args.configs / f"{name}.toml",
            args.out / f"offline-{name}",
            title=f"Offline trade-off: {name} reference bundle",
        )
        print(
            f"wrote {report.json_path}, {report.markdown_path}, {', '.join(str(p) for p in report.plot_paths)}"
        )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from distree_mqtt.evaluation.report import evaluate_bundle
    from distree_mqtt.reference import reference_bundle

    with tempfile.TemporaryDirectory() as scratch:
        report = evaluate_bundle(
            reference_bundle("mnist"), None, Path(scratch), title="distree demo (offline)"
        )
        text = report.markdown_path.read_text()
    print(text.split("## Calibration")[0].rstrip())
    print("\nPlots and the CIFAR-10 report: docs/benchmarks/ (regenerate: make reference)")
    return 0
