"""Markdown and plots of the pipeline benchmark report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

POLICY_ORDER = ("adaptive", "static", "no-exit", "single-device")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(report: dict[str, Any], out: Path) -> None:
    plots = _plots(report, out)
    codecs = report["codecs"]
    hop = report["hop_cost"]
    throughput = report["throughput"]
    load = report["load"]
    final_accuracy = report["final_exit_accuracy_on_workload"]
    lines = [
        "# Pipeline benchmark",
        "",
        f"Regenerate: `distree bench pipeline` (this machine: {report['machine']['processor']}, torch "
        f"{report['machine']['torch']}; everything below was measured in one run). Devices are separate "
        "processes on loopback Mosquitto; Pi-like devices emulate a slower CPU by stretching each stage's "
        f"measured time by `--slowdown {load_slowdown(report)}`.",
        "",
        "## Bytes per hop and accuracy per feature codec",
        "",
        f"{codecs['images']} clean test digits through all three stages (no early exits), in process. "
        f"The raw image is {codecs['raw_image_bytes']} B ({codecs['png_image_bytes_mean']:.0f} B as PNG); "
        f"float32 features are {', '.join(f'{v} B into stage {k}' for k, v in codecs['float32_feature_bytes'].items())} "
        "before the envelope header.",
        "",
        "| codec | into stage 1 | into stage 2 | x smaller than float32 (1 / 2) | accuracy | loss (points) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in codecs["codecs"].items():
        sizes, ratios = row["mean_bytes_into_stage"], row["ratio_vs_float32"]
        lines.append(
            f"| {name} | {sizes['1']:.0f} B | {sizes['2']:.0f} B | {ratios['1']:.2f} / {ratios['2']:.2f} | "
            f"{100 * row['accuracy']:.2f}% | {row['accuracy_loss_points']:.2f} |"
        )
    lines += [
        "",
        "## Per-hop cost of MQTT plus codec",
        "",
        f"{hop['requests']} sequential requests through three devices (codec {hop['codec']}); added latency "
        "per leg = (latency from creation to the final stage's answer - the stages' compute) / stages visited; "
        "a leg is one publish through the broker plus decoding, encoding and queueing at the device.",
        "",
        f"- added per leg: p50 **{hop['added_ms_per_leg_p50']:.2f} ms**, p95 {hop['added_ms_per_leg_p95']:.2f} ms",
        f"- client round trip (submit to result, 4 publishes): p50 {hop['client_round_trip_ms_p50']:.2f} ms",
        f"- in process, the same three stages with codec and envelopes: p50 {hop['in_process_pipeline_ms_p50']:.2f} ms "
        f"(stage compute alone {hop['in_process_stage_compute_ms']:.2f} ms)",
        "",
        "## Throughput",
        "",
        f"{throughput['requests']} requests at once, no early exits, devices with `--slowdown {throughput['slowdown']}` "
        f"and micro-batches of {throughput['max_batch']}: in steady state (completions between the 10th and 90th "
        f"percentile) the pipeline delivered **{throughput['pipeline_per_s']:.1f}/s**; "
        f"the slowest stage alone, in process, with the same batch and slowdown: {throughput['slowest_stage_in_process_per_s']:.1f}/s "
        f"(ratio **{100 * throughput['ratio']:.0f}%**).",
        "",
        "## Under load",
        "",
        f"Single-request stage times with slowdown: {', '.join(f'{t:.1f} ms' for t in load['stage_ms'])}; "
        "devices batch up to 8. Capacity = the no-exit pipeline's measured throughput above, "
        f"{load['capacity_per_s']:.1f} requests/s. Poisson arrivals, {report['options']['level_seconds']:.0f} s "
        f"per level, latency target {report['options']['latency_target_ms']:.0f} ms, deadline {load['deadline_ms']:.0f} ms. "
        "Attainment counts every request sent (rejections and timeouts are misses). Final-exit accuracy "
        f"on this workload (clean + camera-like digits): {100 * final_accuracy:.2f}%.",
        "",
        "| policy | load | sent | within target | accuracy | p50 | p95 | p99 | exits (0/1/2) | outcomes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for policy in POLICY_ORDER:
        for row in load["policies"].get(policy, []):
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
            lines.append(
                f"| {policy} | {row['load_factor']:.1f}x | {row['requests']} | {100 * row['within_target']:.1f}% | "
                f"{100 * row['accuracy']:.2f}% | {_fmt(row['p50_ms'])} | {_fmt(row['p95_ms'])} | {_fmt(row['p99_ms'])} | "
                f"{' / '.join(f'{100 * s:.0f}%' for s in row['exit_share'])} | {outcomes} |"
            )
    step = load["step"]
    lines += [
        "",
        "## Load step (adaptive)",
        "",
        f"0.5x capacity, then 1.5x from t = {step['step_at_s']:.1f} s: the profile point changed "
        f"{step['changes_after_step']} time(s) after the step and settled {step['settle_s']:.1f} s after it.",
    ]
    settled = step.get("after_settling")
    if settled:
        lines.append(
            f"From 5 s after the step: {100 * settled['within_target']:.1f}% within target, accuracy "
            f"{100 * settled['accuracy']:.2f}%, p95 {_fmt(settled['p95_ms'])} ms."
        )
    lines += ["", *[f"![{p.name}]({p.name})" for p in plots], ""]
    (out / "report.md").write_text("\n".join(lines))


def load_slowdown(report: dict[str, Any]) -> float:
    return float(report["options"]["slowdown"])


def _plots(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = report["load"]
    paths = []
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for policy in POLICY_ORDER:
        rows = [r for r in load["policies"].get(policy, []) if abs(r["load_factor"] - 1.5) < 1e-9]
        if rows and rows[0]["latencies_ms"]:
            latencies = rows[0]["latencies_ms"]
            axes.plot(latencies, [(i + 1) / rows[0]["requests"] for i in range(len(latencies))], label=policy)
    axes.axvline(report["options"]["latency_target_ms"], color="grey", linestyle="--", label="target")
    axes.set_xscale("log")
    axes.set_xlabel("end-to-end latency (ms)")
    axes.set_ylabel("share of requests sent")
    axes.set_title("Latency CDF at 1.5x the no-exit capacity")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    paths.append(out / "latency-cdf.png")
    figure.savefig(paths[-1])
    plt.close(figure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for policy in POLICY_ORDER:
        rows = load["policies"].get(policy, [])
        factors = [r["load_factor"] for r in rows]
        left.plot(factors, [100 * r["within_target"] for r in rows], marker="o", label=policy)
        right.plot(factors, [100 * r["accuracy"] for r in rows], marker="o", label=policy)
    right.axhline(
        100 * report["final_exit_accuracy_on_workload"], color="grey", linestyle="--", label="final exit"
    )
    left.set_xlabel("load (x no-exit capacity)")
    left.set_ylabel("within latency target (%)")
    right.set_xlabel("load (x no-exit capacity)")
    right.set_ylabel("accuracy of answers (%)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    paths.append(out / "load.png")
    figure.savefig(paths[-1])
    plt.close(figure)

    step = load["step"]
    figure, axes = plt.subplots(figsize=(8, 4), dpi=110)
    trace = step["trace"]
    if trace:
        times = [p["t"] for p in trace]
        for k in range(len(trace[0]["thresholds"])):
            axes.step(
                times,
                [p["thresholds"][k] if p["thresholds"][k] is not None else float("nan") for p in trace],
                where="post",
                label=f"threshold exit {k}",
            )
        axes.axvline(step["step_at_s"], color="grey", linestyle="--", label="load step")
        twin = axes.twinx()
        twin.plot(
            times,
            [p["observed_p95_ms"] or float("nan") for p in trace],
            color="black",
            alpha=0.4,
            label="observed p95 (ms)",
        )
        twin.set_ylabel("observed p95 (ms)")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("threshold")
    axes.set_title("Adaptive thresholds across a load step (0.5x -> 1.5x)")
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    paths.append(out / "threshold-trace.png")
    figure.savefig(paths[-1])
    plt.close(figure)
    return paths
