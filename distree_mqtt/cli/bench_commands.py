"""Benchmark subcommands (`distree bench ...`) and the offline demo."""

from __future__ import annotations

import argparse
import json
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

    pipeline = kinds.add_parser(
        "pipeline",
        help="MQTT runtime: codecs, per-hop cost, throughput, adaptive vs baselines under load",
        description="Runs a private Mosquitto and device processes; writes docs/benchmarks/pipeline/"
        "report.{json,md} and plots. Takes about ten minutes.",
    )
    pipeline.add_argument("--out", type=Path, default=REPORT_DIR / "pipeline")
    pipeline.add_argument("--slowdown", type=float, default=20.0, help="Pi-like devices: stage time x F")
    pipeline.add_argument("--latency-target-ms", type=float, default=100.0)
    pipeline.add_argument("--level-seconds", type=float, default=20.0, help="duration of each load level")
    pipeline.add_argument("--quick", action="store_true", help="short levels and fewer requests (smoke run)")
    pipeline.set_defaults(handler=run_pipeline)

    fuzz = kinds.add_parser(
        "fuzz",
        help="hostile input on every subscribed topic of live services (writes docs/reliability/fuzz.json)",
        description="Start a private Mosquitto, three devices, the orchestrator and a camera; publish "
        "Hypothesis-generated and random hostile inputs to every topic they subscribe to while a valid "
        "client keeps sending requests; count inputs, rejections on `errors`, crashes and RSS per process.",
    )
    fuzz.add_argument("--size", choices=["short", "long"], default="long", help="inputs per case")
    fuzz.add_argument("--seed", type=int, default=0)
    fuzz.add_argument("--no-camera", dest="camera", action="store_false", help="leave the camera out")
    fuzz.add_argument("--out", type=Path, default=Path("docs/reliability"))
    fuzz.set_defaults(handler=run_fuzz)

    reliability = kinds.add_parser(
        "reliability",
        help="fault scenarios, fuzzing and security checks (writes docs/reliability.md)",
        description="Run every fault scenario (SIGKILL with and without a replica, SIGSTOP until the Last "
        "Will, broker and orchestrator restarts, 10x overload) against real Mosquitto and device processes, "
        "the fuzzing campaign and the security tests; write docs/reliability.md, docs/reliability/report.json "
        "and outcomes.png. Exits 1 if any scenario lost or duplicated a request.",
    )
    reliability.add_argument("--scenario", action="append", dest="scenarios", help="only these (repeatable)")
    reliability.add_argument(
        "--fuzz",
        choices=["long", "short", "reuse", "skip"],
        default="long",
        help="run the fuzzing campaign (long or short), reuse docs/reliability/fuzz.json, or leave it out",
    )
    reliability.add_argument(
        "--no-security", dest="security", action="store_false", help="skip the security tests"
    )
    reliability.add_argument(
        "--quick", action="store_true", help="short traffic around each fault (smoke run)"
    )
    reliability.add_argument("--markdown", type=Path, default=Path("docs/reliability.md"))
    reliability.add_argument("--out", type=Path, default=Path("docs/reliability"))
    reliability.set_defaults(handler=run_reliability)

    soak = kinds.add_parser(
        "soak",
        help="find the highest rate held within the latency target, hold it, watch RSS and the ledger",
        description="Probe Poisson rates with the adaptive orchestrator (doubling, then bisection), hold the "
        "highest rate with p95 <= target and >= 95%% within it for --minutes, sample RSS of every process "
        "and write docs/benchmarks/soak/report.{json,md}, rss.png and latency.png. Not run in CI.",
    )
    soak.add_argument("--minutes", type=float, default=10.0, help="how long to hold the rate")
    soak.add_argument("--latency-target-ms", type=float, default=250.0)
    soak.add_argument("--probe-seconds", type=float, default=12.0, help="duration of each probe level")
    soak.add_argument(
        "--confirmation-seconds",
        type=float,
        default=60.0,
        help="a candidate rate must also hold this long (else 10%% less is tried)",
    )
    soak.add_argument("--window-s", type=float, default=30.0, help="latency percentiles per window")
    soak.add_argument("--out", type=Path, default=REPORT_DIR / "soak")
    soak.set_defaults(handler=run_soak)

    demo = commands.add_parser(
        "demo",
        help="run the distributed pipeline on this machine and print a summary",
        description="Start a private broker (Mosquitto, else the embedded amqtt broker), the orchestrator "
        "and three device processes, stream the bundled test images at a set rate, print accuracy, exits "
        "per stage, latency percentiles and bytes per hop, then stop everything.",
    )
    demo.add_argument("--images", type=int, default=300, help="how many test images to stream")
    demo.add_argument("--rate", type=float, default=30.0, help="requests per second")
    demo.add_argument("--deadline-ms", type=float, default=1000.0)
    demo.add_argument("--latency-target-ms", type=float, default=250.0)
    demo.add_argument("--slowdown", type=float, default=1.0, help="emulate slower devices (stage time x F)")
    demo.add_argument("--codec", default="int8+zstd", help="feature codec between stages")
    demo.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--offline", action="store_true", help="only show the offline trade-off of the bundle")
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


def run_pipeline(args: argparse.Namespace) -> int:
    from distree_mqtt.bench.pipeline import PipelineBenchOptions, run_pipeline_bench

    options = PipelineBenchOptions(
        out=args.out,
        slowdown=args.slowdown,
        latency_target_ms=args.latency_target_ms,
        level_seconds=args.level_seconds,
    )
    if args.quick:
        options = PipelineBenchOptions(
            out=args.out,
            slowdown=args.slowdown,
            latency_target_ms=args.latency_target_ms,
            level_seconds=3.0,
            codec_images=100,
            hop_requests=30,
            throughput_requests=60,
            step_seconds=(3.0, 4.0),
        )
    run_pipeline_bench(options)
    print((options.out / "report.md").read_text())
    return 0


def run_fuzz(args: argparse.Namespace) -> int:
    from distree_mqtt.bench.fuzz import fuzz_summary, run_fuzz_campaign, write_fuzz_report

    report = run_fuzz_campaign(size=args.size, seed=args.seed, camera=args.camera)
    path = write_fuzz_report(report, args.out)
    print(fuzz_summary(report))
    print(f"wrote {path}")
    return 0 if report["crashes"] == 0 and not report["topic_violations"] else 1


def run_soak(args: argparse.Namespace) -> int:
    from distree_mqtt.bench.soak import SoakOptions
    from distree_mqtt.bench.soak import run_soak as soak

    options = SoakOptions(
        minutes=args.minutes,
        latency_target_ms=args.latency_target_ms,
        probe_seconds=args.probe_seconds,
        confirmation_seconds=args.confirmation_seconds,
        window_s=args.window_s,
        out=args.out,
    )
    report = soak(options)
    print((options.out / "report.md").read_text())
    return 0 if report["ledger"]["lost"] == 0 and not report["exited"] else 1


def run_reliability(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from distree_mqtt.bench.reliability import report_dict
    from distree_mqtt.bench.reliability import run_reliability as run_scenarios
    from distree_mqtt.bench.reliability_render import default_options, run_security_checks, write_report

    options = replace(default_options(args.quick), scenarios=tuple(args.scenarios or ()))
    reports = run_scenarios(options)
    report = report_dict(reports, options)
    fuzz_path = args.out / "fuzz.json"
    if args.fuzz in ("long", "short"):
        from distree_mqtt.bench.fuzz import run_fuzz_campaign, write_fuzz_report

        print("fuzzing ...")
        report["fuzz"] = run_fuzz_campaign(size=args.fuzz)
        write_fuzz_report(report["fuzz"], args.out)
    elif args.fuzz == "reuse" and fuzz_path.exists():
        report["fuzz"] = json.loads(fuzz_path.read_text())
    if report.get("fuzz"):
        # The RSS samples stay in fuzz.json; the verdict comes along.
        rss = {key: value for key, value in report["fuzz"].get("rss", {}).items() if key != "samples"}
        report["fuzz"] = {**report["fuzz"], "rss": rss}
    if args.security:
        print("security checks ...")
        report["security"] = run_security_checks()
    paths = write_report(report, args.markdown, args.out)
    print((args.markdown).read_text())
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0 if all(r.passed for r in reports) else 1


def run_demo(args: argparse.Namespace) -> int:
    if not args.offline:
        from distree_mqtt.demo import DemoOptions, format_summary
        from distree_mqtt.demo import run_demo as run_distributed

        options = DemoOptions(
            images=args.images,
            rate=args.rate,
            deadline_ms=args.deadline_ms,
            latency_target_ms=args.latency_target_ms,
            slowdown=args.slowdown,
            codec=args.codec,
            broker=args.broker,
            progress=not args.json,
        )
        summary = run_distributed(options)
        print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
        return 0
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
