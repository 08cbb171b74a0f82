"""`distree bench pipeline`: what the MQTT runtime costs and what the adaptive policy buys.

Measured side by side in one run, on this machine:
1. codecs: bytes into each stage and accuracy per feature codec (in-process, whole test set);
2. per-hop cost: latency added by MQTT + codec per leg, against the stages' own compute;
3. throughput of the three-device pipeline against the in-process throughput of its slowest stage;
4. load sweep with Pi-like devices (--slowdown): Poisson arrivals from 0.5x to 2x the no-exit
   pipeline's capacity for adaptive, static, no-exit and the full model on one device;
5. a load step (0.5x -> 1.5x) with the adaptive policy: the threshold trace and settling time.
"""

from __future__ import annotations

import itertools
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from distree_mqtt.bench.harness import (
    RunningPipeline,
    collect,
    drain,
    generator_without_gc_pauses,
    poisson_load,
    summarise_outcomes,
)
from distree_mqtt.bundle import load_manifest, load_network
from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.device.local import LocalPipeline
from distree_mqtt.device.runner import quiet_stage_time_ms
from distree_mqtt.policy_defaults import default_policy
from distree_mqtt.protocol import Policy
from distree_mqtt.reference import reference_bundle
from distree_mqtt.wire import codec_names
from distree_mqtt.wire.images import encode_image

NO_EXIT = Policy(version=0, mode="no-exit", thresholds=[None, None])


@dataclass(frozen=True)
class PipelineBenchOptions:
    out: Path = Path("docs/benchmarks/pipeline")
    slowdown: float = 20.0
    latency_target_ms: float = 100.0
    load_factors: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    level_seconds: float = 20.0
    codec_images: int = 2000
    hop_requests: int = 300
    throughput_requests: int = 1200
    step_seconds: tuple[float, float] = (10.0, 20.0)


def _workload() -> tuple[np.ndarray, np.ndarray]:
    """Clean and camera-like test digits, interleaved: inputs of varying difficulty."""
    data = load_dataset(DataSpec())
    images = np.concatenate([data.test.images[:, 0], data.extra_tests["camera"].images[:, 0]])
    labels = np.concatenate([data.test.labels, data.extra_tests["camera"].labels])
    order = np.random.default_rng(7).permutation(len(labels))
    return images[order], labels[order]


def bench_codecs(count: int) -> dict[str, Any]:
    data = load_dataset(DataSpec())
    images, labels = data.test.images[:count, 0], data.test.labels[:count]
    rows: dict[str, dict[str, Any]] = {}
    png_sizes = [len(encode_image(image, "png")[0]) for image in images[:200]]
    for codec in tqdm(codec_names(), desc="codecs", leave=False):
        local = LocalPipeline(reference_bundle("mnist"), codec=codec)
        correct = 0
        sizes: dict[int, list[int]] = {1: [], 2: []}
        for image, label in zip(images, labels, strict=True):
            result = local.infer(image, NO_EXIT)
            correct += int(result.label == label)
            for hop in result.hops:
                if hop.stage_index > 0:
                    sizes[hop.stage_index].append(hop.wire_bytes)
        rows[codec] = {
            "accuracy": correct / count,
            "mean_bytes_into_stage": {str(k): float(np.mean(v)) for k, v in sizes.items()},
        }
    float_bytes = rows["float32"]["mean_bytes_into_stage"]
    for row in rows.values():
        row["ratio_vs_float32"] = {k: float_bytes[k] / v for k, v in row["mean_bytes_into_stage"].items()}
        row["accuracy_loss_points"] = 100 * (rows["float32"]["accuracy"] - row["accuracy"])
    manifest = load_manifest(reference_bundle("mnist"))
    return {
        "images": count,
        "codecs": rows,
        "raw_image_bytes": int(np.prod(manifest.input.shape)),
        "png_image_bytes_mean": float(np.mean(png_sizes)),
        "float32_feature_bytes": {
            str(s.index + 1): 4 * int(np.prod(s.output_shape)) for s in manifest.stages[:-1]
        },
    }


def _stage_times_ms(batch: int) -> list[float]:
    """In-process quiet time of each stage on a batch (one thread, as a device runs it): the
    same measurement a device with --slowdown multiplies."""
    torch.set_num_threads(1)
    manifest = load_manifest(reference_bundle("mnist"))
    _, network = load_network(reference_bundle("mnist"))
    return [
        quiet_stage_time_ms(network.stages[k], manifest.stages[k].input_shape, batch)
        for k in range(len(manifest.stages))
    ]


def bench_hop_cost(requests: int, images: np.ndarray) -> dict[str, Any]:
    running = RunningPipeline.start("hop", [["--stage", str(k)] for k in range(3)], {})
    try:
        running.publish_policy(NO_EXIT)  # every request crosses all three stages
        rows = []
        round_trips = []
        with running.client("hop-client") as client:
            for index in tqdm(range(requests), desc="per-hop cost", leave=False):
                sent = time.perf_counter()
                result = client.submit(images[index], deadline_ms=10_000).result()
                round_trips.append((time.perf_counter() - sent) * 1000)
                compute = sum(hop.compute_ms for hop in result.hops)
                # latency_ms runs from creation to the final stage's answer: one leg per stage.
                rows.append(((result.latency_ms or 0) - compute) / len(result.hops))
    finally:
        running.stop()
    local = LocalPipeline(reference_bundle("mnist"), codec="int8+zstd")
    local_times = []
    for index in range(min(requests, 300)):
        started = time.perf_counter()
        local.infer(images[index], NO_EXIT)
        local_times.append((time.perf_counter() - started) * 1000)
    stage_only = sum(_stage_times_ms(1))
    return {
        "requests": requests,
        "codec": "int8+zstd",
        "added_ms_per_leg_p50": float(np.percentile(rows, 50)),
        "added_ms_per_leg_p95": float(np.percentile(rows, 95)),
        "client_round_trip_ms_p50": float(np.percentile(round_trips, 50)),
        "in_process_pipeline_ms_p50": float(np.percentile(local_times, 50)),
        "in_process_stage_compute_ms": stage_only,
    }


def bench_throughput(requests: int, slowdown: float, images: np.ndarray) -> dict[str, Any]:
    environment = {"DISTREE_DEVICE__QUEUE_CAPACITY": str(requests + 10)}
    arguments = [["--stage", str(k), "--slowdown", str(slowdown), "--max-batch", "8"] for k in range(3)]
    running = RunningPipeline.start("throughput", arguments, environment)
    try:
        running.publish_policy(NO_EXIT)
        with running.client("throughput-client") as client:
            futures = [client.submit(images[i % len(images)], deadline_ms=120_000) for i in range(requests)]
            results = [future.result() for future in futures]
    finally:
        running.stop()
    # Steady state: completions between the 10th and 90th percentile, without fill and drain.
    done = np.sort([r.completed_at or 0.0 for r in results])
    first, last = int(0.1 * requests), int(0.9 * requests)
    measured = (last - first) / (done[last] - done[first])
    batch_times = _stage_times_ms(8)
    slowest = min(8 / (t * slowdown / 1000) for t in batch_times)
    return {
        "requests": requests,
        "slowdown": slowdown,
        "max_batch": 8,
        "pipeline_per_s": measured,
        "slowest_stage_in_process_per_s": slowest,
        "ratio": measured / slowest,
        "stage_batch8_ms": batch_times,
    }


def _sweep(
    running: RunningPipeline,
    name: str,
    options: PipelineBenchOptions,
    capacity: float,
    deadline: float,
    images: np.ndarray,
    labels: np.ndarray,
) -> list[dict[str, Any]]:
    """One Poisson level per load factor (the same seeds for every policy), drained in between."""
    rows = []
    with running.client(f"load-{name}") as client:
        for factor in tqdm(options.load_factors, desc=f"load {name}", leave=False):
            rate = factor * capacity
            with generator_without_gc_pauses():
                futures = poisson_load(
                    client, images, labels, rate, options.level_seconds, deadline, seed=int(factor * 100)
                )
                outcomes = collect(futures)
            rows.append({"load_factor": factor, **summarise_outcomes(outcomes, options.latency_target_ms)})
            drain(3.0)
    return rows


def bench_load(
    options: PipelineBenchOptions, images: np.ndarray, labels: np.ndarray, capacity: float
) -> dict[str, Any]:
    """`capacity`: the measured throughput of the no-exit pipeline with the same devices."""
    stage_ms = [t * options.slowdown for t in _stage_times_ms(1)]
    deadline = 5 * options.latency_target_ms
    arguments = [
        ["--stage", str(k), "--slowdown", str(options.slowdown), "--max-batch", "8"] for k in range(3)
    ]
    orchestrator = ["--latency-target-ms", str(options.latency_target_ms)]
    running = RunningPipeline.start("load", arguments, {}, orchestrator)
    policies: dict[str, list[dict[str, Any]]] = {}
    try:
        for mode in ("adaptive", "static", "no-exit"):
            running.set("mode", mode)
            policies[mode] = _sweep(running, mode, options, capacity, deadline, images, labels)
        step = bench_step(running, options, capacity, deadline, images, labels)
    finally:
        running.stop()
    single = RunningPipeline.start(
        "single",
        [["--stage", "0", "--whole-model", "--slowdown", str(options.slowdown), "--max-batch", "8"]],
        {},
    )
    try:
        policies["single-device"] = _sweep(
            single, "single-device", options, capacity, deadline, images, labels
        )
    finally:
        single.stop()
    return {
        "stage_ms": stage_ms,
        "capacity_per_s": capacity,
        "deadline_ms": deadline,
        "policies": policies,
        "step": step,
    }


def bench_step(
    running: RunningPipeline,
    options: PipelineBenchOptions,
    capacity: float,
    deadline: float,
    images: np.ndarray,
    labels: np.ndarray,
) -> dict[str, Any]:
    running.set("mode", "adaptive")
    low_s, high_s = options.step_seconds
    running.state_trace.clear()
    with running.client("step") as client, generator_without_gc_pauses():
        started = time.time()
        futures = poisson_load(client, images, labels, 0.5 * capacity, low_s, deadline, seed=11)
        step_at = time.time()
        futures += poisson_load(client, images, labels, 1.5 * capacity, high_s, deadline, seed=12)
        outcomes = collect(futures)
    trace = [
        {
            "t": s["timestamp"] - started,
            "profile_index": s["profile_index"],
            "thresholds": s["thresholds"],
            "observed_p95_ms": s["observed_p95_ms"],
            "arrival_rate": s["arrival_rate"],
        }
        for s in running.state_trace
        if s.get("mode") == "adaptive"
    ]
    after = [point for point in trace if point["t"] >= step_at - started]
    changes = [b["t"] for a, b in itertools.pairwise(after) if a["profile_index"] != b["profile_index"]]
    settle = (changes[-1] - (step_at - started)) if changes else 0.0
    high = [o for o in outcomes if o.sent_at >= step_at + 5]
    return {
        "step_at_s": step_at - started,
        "trace": trace,
        "changes_after_step": len(changes),
        "settle_s": settle,
        "after_settling": summarise_outcomes(high, options.latency_target_ms) if high else None,
    }


def final_exit_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
    manifest, network = load_network(reference_bundle("mnist"))
    with torch.no_grad():
        batch = manifest.input.normalise(torch.from_numpy(images[:, None]))
        logits = network(batch)[-1].logits
    return float((logits.argmax(1).numpy() == labels).mean())


def run_pipeline_bench(options: PipelineBenchOptions) -> dict[str, Any]:
    # One thread, like each device: on two cores, more threads beside busy devices thrash.
    torch.set_num_threads(1)
    images, labels = _workload()
    report: dict[str, Any] = {
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "final_exit_accuracy_on_workload": final_exit_accuracy(images, labels),
        "default_policy": default_policy(load_manifest(reference_bundle("mnist"))).model_dump(),
    }
    report["codecs"] = bench_codecs(options.codec_images)
    report["hop_cost"] = bench_hop_cost(options.hop_requests, images)
    report["throughput"] = bench_throughput(options.throughput_requests, options.slowdown, images)
    report["load"] = bench_load(options, images, labels, report["throughput"]["pipeline_per_s"])
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    from distree_mqtt.bench.pipeline_render import render

    render(report, options.out)
    return report
