"""`distree demo`: the whole distributed pipeline on one machine, started and stopped for you.

A private broker (Mosquitto when installed, else the embedded amqtt broker), the orchestrator
and one device process per stage; a source streams the bundled test images (clean and
camera-like, so difficulty varies) at a set rate and a summary is printed at the end.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from distree_mqtt.client import Pipeline, RequestRejected, RequestTimeout
from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.launch import Processes, start_broker, wait_online
from distree_mqtt.protocol import Result
from distree_mqtt.settings import load_settings

PIPELINE = "demo"


@dataclass(frozen=True)
class DemoOptions:
    images: int = 300
    rate: float = 30.0  # requests per second
    deadline_ms: float = 1000.0
    latency_target_ms: float = 250.0
    slowdown: float = 1.0
    codec: str = "int8+zstd"
    broker: Literal["auto", "mosquitto", "embedded"] = "auto"
    progress: bool = True


def summarise(
    results: list[Result | None], labels: np.ndarray, raw_bytes: list[int], target_ms: float, elapsed_s: float
) -> dict[str, Any]:
    answered = [(r, int(label)) for r, label in zip(results, labels, strict=True) if r is not None and r.ok]
    latencies = np.array([r.latency_ms for r, _ in answered if r.latency_ms is not None])
    outcomes: dict[str, int] = {}
    for result in results:
        kind = result.outcome if result is not None else "timeout"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    num_stages = 1 + max((r.exit_stage or 0) for r, _ in answered) if answered else 0
    exits = [sum(r.exit_stage == k for r, _ in answered) for k in range(num_stages)]
    hop_bytes: dict[int, list[int]] = {}
    for result, _ in answered:
        for hop in result.hops:
            hop_bytes.setdefault(hop.stage_index, []).append(hop.wire_bytes)
    return {
        "requests": len(results),
        "outcomes": outcomes,
        "accuracy": sum(r.label == label for r, label in answered) / max(1, len(answered)),
        "exit_share": [count / max(1, len(answered)) for count in exits],
        "latency_ms": {
            name: float(np.percentile(latencies, q)) if len(latencies) else None
            for name, q in (("p50", 50), ("p95", 95), ("p99", 99))
        },
        "within_target": float((latencies <= target_ms).mean()) if len(latencies) else 0.0,
        "latency_target_ms": target_ms,
        "mean_bytes_into_stage": {str(k): float(np.mean(v)) for k, v in sorted(hop_bytes.items())},
        "mean_raw_image_bytes": float(np.mean(raw_bytes)) if raw_bytes else 0.0,
        "throughput_per_s": len(answered) / elapsed_s if elapsed_s > 0 else 0.0,
    }


def run_demo(options: DemoOptions) -> dict[str, Any]:
    data = load_dataset(DataSpec())
    count = options.images
    half = count // 2
    images = np.concatenate(
        [data.test.images[: count - half, 0], data.extra_tests["camera"].images[:half, 0]]
    )
    labels = np.concatenate([data.test.labels[: count - half], data.extra_tests["camera"].labels[:half]])
    order = np.random.default_rng(0).permutation(count)
    images, labels = images[order], labels[order]

    broker, protocol = start_broker(options.broker)
    processes = Processes()
    environment = {"DISTREE_BROKER__PROTOCOL": protocol, "PYTHONUNBUFFERED": "1"}
    if protocol != "5":
        environment["DISTREE_DEVICE__SHARED_SUBSCRIPTION"] = "false"  # amqtt ignores $share
    common = ["--broker", broker.url, "--pipeline", PIPELINE]
    try:
        processes.spawn(
            ["orchestrator", *common, "--latency-target-ms", str(options.latency_target_ms)], environment
        )
        for stage in range(3):
            processes.spawn(
                [
                    "device",
                    *common,
                    "--stage",
                    str(stage),
                    "--device-id",
                    f"demo-stage{stage}",
                    "--codec",
                    options.codec,
                    "--slowdown",
                    str(options.slowdown),
                ],
                environment,
            )
        wait_online(
            broker.url,
            protocol,
            PIPELINE,
            {"orchestrator", "demo-stage0", "demo-stage1", "demo-stage2"},
            processes,
        )
        time.sleep(1.0)  # one telemetry round so devices know their peers
        settings = load_settings(
            broker={"url": broker.url, "protocol": protocol},
            pipeline=PIPELINE,
            client={"source": "demo-source"},
        )
        results: list[Result | None] = [None] * count
        raw_bytes: list[int] = []
        with Pipeline(settings=settings) as client:
            futures: list[Future[Result]] = []
            progress = tqdm(total=count, desc="demo", disable=not options.progress, unit="img")
            started = time.monotonic()
            for index in range(count):
                wait = started + index / options.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                future = client.submit(images[index], deadline_ms=options.deadline_ms)
                future.add_done_callback(lambda _: progress.update(1))
                futures.append(future)
                raw_bytes.append(int(images[index].nbytes))
            for index, future in enumerate(futures):
                try:
                    results[index] = future.result()
                except RequestRejected as error:
                    results[index] = error.result
                except RequestTimeout:
                    results[index] = None
            elapsed = time.monotonic() - started
            progress.close()
        return summarise(results, labels, raw_bytes, options.latency_target_ms, elapsed) | {
            "broker": type(broker).__name__,
            "protocol": protocol,
            "rate": options.rate,
        }
    finally:
        processes.stop()
        broker.stop()


def format_summary(summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    lines = [
        f"broker: {summary['broker']} (MQTT {summary['protocol']}), {summary['requests']} requests at {summary['rate']:.0f}/s",
        f"outcomes: {', '.join(f'{k} {v}' for k, v in sorted(summary['outcomes'].items()))}",
        f"accuracy: {100 * summary['accuracy']:.2f}%",
        "exits per stage: "
        + ", ".join(f"stage {k} {100 * share:.1f}%" for k, share in enumerate(summary["exit_share"])),
        f"latency: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms, p99 {latency['p99']:.1f} ms"
        if latency["p50"] is not None
        else "latency: no results",
        f"within the {summary['latency_target_ms']:.0f} ms target: {100 * summary['within_target']:.1f}%",
        "bytes into each stage (mean): "
        + ", ".join(f"stage {k} {v:.0f} B" for k, v in summary["mean_bytes_into_stage"].items())
        + f" (raw image {summary['mean_raw_image_bytes']:.0f} B)",
        f"throughput: {summary['throughput_per_s']:.1f} results/s",
    ]
    return "\n".join(lines)
