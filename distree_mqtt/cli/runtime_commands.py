"""Runtime subcommands: device, orchestrator, infer, results."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from distree_mqtt.settings import DistreeSettings, Role, load_settings


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="settings file (YAML; see `distree config schema`); DISTREE_* variables also apply",
    )
    parser.add_argument("--broker", help="broker URL, mqtt://[user:pass@]host:port or mqtts://...")
    parser.add_argument("--pipeline", help="pipeline name (topic level after the prefix)")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], help="MQTT protocol version")


def _settings(args: argparse.Namespace, command: Role | None = None, **sections: Any) -> DistreeSettings:
    return load_settings(
        args.config,
        command=command,
        broker={"url": args.broker, "protocol": args.protocol},
        pipeline=args.pipeline,
        **sections,
    )


def register(commands: Any) -> None:
    device = commands.add_parser(
        "device",
        help="run one stage of a bundle as an MQTT device",
        description="Subscribe to the stage's input topic (shared subscription), run the stage, exit early "
        "or forward compressed features, publish telemetry. Stops cleanly on SIGINT/SIGTERM.",
    )
    _common(device)
    device.add_argument("--stage", type=int, dest="stage_index", help="stage index this device runs")
    device.add_argument("--bundle", type=Path, help="bundle directory (default: shipped MNIST reference)")
    device.add_argument("--device-id", help="unique device id")
    device.add_argument(
        "--codec", help="feature codec: float32, float16, int8, int8+zlib, int8+zstd, int6+zstd"
    )
    device.add_argument("--slowdown", type=float, help="emulate a slower CPU: stage time x F")
    device.add_argument("--max-batch", type=int, help="micro-batch size")
    device.add_argument("--queue-capacity", type=int, help="bounded queue length")
    device.add_argument(
        "--whole-model",
        action="store_true",
        default=None,
        help="run all stages here, final exit only (baseline)",
    )
    device.set_defaults(handler=run_device)

    orchestrator = commands.add_parser(
        "orchestrator",
        help="adapt exit thresholds to meet a latency target",
        description="Watch telemetry and results, choose thresholds from the bundle's profile and "
        "publish the retained policy. Modes: adaptive, static, no-exit.",
    )
    _common(orchestrator)
    orchestrator.add_argument("--bundle", type=Path, help="bundle whose profile is used")
    orchestrator.add_argument("--latency-target-ms", type=float, help="p95 end-to-end target")
    orchestrator.add_argument("--mode", choices=["adaptive", "static", "no-exit"])
    orchestrator.add_argument("--criterion", help="exit criterion (default: the bundle's)")
    orchestrator.set_defaults(handler=run_orchestrator)

    infer = commands.add_parser(
        "infer", help="classify images through a running pipeline (one JSON line each)"
    )
    _common(infer)
    infer.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files")
    infer.add_argument("--deadline-ms", type=float, help="per-request deadline")
    infer.add_argument("--bundle", type=Path, help="bundle the pipeline runs (for its model hash)")
    infer.set_defaults(handler=run_infer)

    results = commands.add_parser("results", help="tail the results of a pipeline (one JSON line each)")
    _common(results)
    results.add_argument("--count", type=int, help="stop after this many results")
    results.set_defaults(handler=run_results)


def run_device(args: argparse.Namespace) -> int:
    from distree_mqtt.device.service import DeviceService
    from distree_mqtt.systemd import run_notified

    device = {
        "stage_index": args.stage_index,
        "bundle": args.bundle,
        "device_id": args.device_id,
        "codec": args.codec,
        "slowdown": args.slowdown,
        "max_batch": args.max_batch,
        "queue_capacity": args.queue_capacity,
        "whole_model": args.whole_model,
    }
    service = DeviceService(_settings(args, "device", device=device))
    service.start()
    print(
        f"device {service.device_id}: stage {service.runner.stage_index} ready", file=sys.stderr, flush=True
    )
    run_notified(service)  # READY=1, STATUS=, watchdog pings; on SIGINT/SIGTERM: STOPPING=1, stop
    return 0


def run_orchestrator(args: argparse.Namespace) -> int:
    from distree_mqtt.orchestrator.service import OrchestratorService
    from distree_mqtt.systemd import run_notified

    options = {
        "bundle": args.bundle,
        "latency_target_ms": args.latency_target_ms,
        "mode": args.mode,
        "criterion": args.criterion,
    }
    service = OrchestratorService(_settings(args, "orchestrator", orchestrator=options))
    service.start()
    print(
        f"orchestrator: {service.policy.mode}, target {service.options.latency_target_ms} ms",
        file=sys.stderr,
        flush=True,
    )
    run_notified(service)
    return 0


def run_infer(args: argparse.Namespace) -> int:
    from distree_mqtt.client import Pipeline, RequestRejected, RequestTimeout

    settings = _settings(args)
    failures = 0
    with Pipeline(settings=settings, bundle=args.bundle) as client:
        futures = [(path, client.submit(path, deadline_ms=args.deadline_ms)) for path in args.images]
        for path, future in futures:
            try:
                line = future.result().model_dump(exclude_none=True)
            except (RequestRejected, RequestTimeout) as error:
                failures += 1
                line = {
                    "outcome": "rejected" if isinstance(error, RequestRejected) else "timeout",
                    "error": str(error),
                }
            print(json.dumps({"image": str(path), **line}), flush=True)
    return 1 if failures else 0


def run_results(args: argparse.Namespace) -> int:
    from distree_mqtt.topics import Topics
    from distree_mqtt.transport import Message, MqttTransport

    settings = _settings(args)
    topics = Topics(settings.topic_prefix, settings.pipeline)
    done = threading.Event()
    seen = 0

    def show(message: Message) -> None:
        nonlocal seen
        print(message.payload.decode("utf-8", "replace"), flush=True)
        seen += 1
        if args.count is not None and seen >= args.count:
            done.set()

    transport = MqttTransport(settings.broker, client_id=f"distree-results-{id(done):x}")
    transport.subscribe(topics.all_results, show)
    transport.start()
    print(f"listening on {topics.all_results}", file=sys.stderr, flush=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    transport.stop()
    return 0
