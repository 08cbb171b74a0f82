"""Render a trade-off report dict as markdown and matplotlib plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _millions(value: float) -> str:
    return f"{value / 1e6:.2f} M"


def render_markdown(report: dict[str, Any], plot_names: list[str]) -> str:
    lines = [f"# {report['title']}", ""]
    lines += [
        f"Model `{report['model_id']}`, content hash `{report['content_hash'][:16]}`; "
        f"torch {report['machine']['torch']}. Thresholds are chosen on the validation split and "
        f"measured on the splits below; the operating point is the cheapest validation setting "
        f"whose accuracy loss against the final exit, plus {report['selection_confidence_z']:g} "
        f"standard error of that per-image paired loss, is within {report['tolerance_points']:.1f} point; "
        f"the bundle stores it, and devices apply it until an orchestrator speaks.",
        "",
        "## Stages",
        "",
        "| stage | body MACs | head MACs | cost to exit here | parameters | features out | weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, spent in zip(report["stages"], report["exit_macs"], strict=True):
        lines.append(
            f"| {stage['index']} | {_millions(stage['body_macs'])} | {_millions(stage['head_macs'])} | "
            f"{_millions(spent)} | {stage['parameters']:,} | {stage['output_shape']} | "
            f"{stage['weights_bytes'] / 1024:.0f} KiB |"
        )
    lines += [
        "",
        f"No-exit network (all bodies, final head only): {_millions(report['no_exit_macs'])} MACs per sample.",
        f"Splitting is exact: stages loaded alone, features passed as float32 bytes, give the whole "
        f"network's logits within {report['split_max_abs_logit_difference']:.2e} (max abs difference).",
    ]
    training = report.get("training") or {}
    if training:
        lines.append(
            f"Training: {training.get('epochs')} epochs in {training.get('train_seconds')} s "
            f"({training.get('hardware') or str(training.get('threads')) + ' CPU threads'}, "
            f"seed {training.get('seed')})." + _averaging_note(training)
        )
    for split, result in report["splits"].items():
        lines += ["", f"## Split `{split}` ({result['samples']} images)", ""]
        lines += [
            "| policy | accuracy | MACs / sample | saving vs no-exit | loss (points) | validation loss ± SE "
            "| exit rates | share of oracle saving |",
            "|---|---|---|---|---|---|---|---|",
        ]
        final = result["no_exit"]["accuracy"]
        lines.append(
            f"| no exit (final only) | {100 * final:.2f}% | {_millions(result['no_exit']['expected_macs'])} | 0% | 0.00 | - | - | - |"
        )
        for index, fixed in enumerate(result["fixed_exits"]):
            lines.append(
                f"| always exit {index} | {100 * fixed['accuracy']:.2f}% | {_millions(fixed['expected_macs'])} | "
                f"{100 * fixed['macs_saving']:.1f}% | {100 * (final - fixed['accuracy']):.2f} | - | - | - |"
            )
        best = result["oracle"]
        lines.append(
            f"| oracle (earliest correct exit) | {100 * best['accuracy']:.2f}% | {_millions(best['expected_macs'])} | "
            f"{100 * best['macs_saving']:.1f}% | {100 * (final - best['accuracy']):.2f} | - | "
            f"{' / '.join(f'{100 * r:.1f}%' for r in best['exit_rates'])} | 100% |"
        )
        for name, criterion in result["criteria"].items():
            point = criterion["operating_point"]
            marker = " (default)" if name == report["default_criterion"] else ""
            lines.append(
                f"| {name}{marker} @ {', '.join(f'{t:.3f}' for t in point['thresholds'])} | "
                f"{100 * point['accuracy']:.2f}% | {_millions(point['expected_macs'])} | "
                f"{100 * point['macs_saving']:.1f}% | {point['accuracy_loss_points']:.2f} | "
                f"{point['validation_loss_points']:.2f} ± {point['validation_loss_error_points']:.2f} | "
                f"{' / '.join(f'{100 * r:.1f}%' for r in point['exit_rates'])} | "
                f"{100 * point['share_of_oracle_saving']:.0f}% |"
            )
    lines += ["", "## Calibration (temperature scaling per exit, fitted on validation)", ""]
    lines += [
        "| exit | T | val NLL before → after | val ECE before → after | test NLL before → after | test ECE before → after |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["calibration"]:
        lines.append(
            f"| {row['exit']} | {row['temperature']:.3f} | {row['val_nll_before']:.4f} → {row['val_nll_after']:.4f} | "
            f"{row['val_ece_before']:.4f} → {row['val_ece_after']:.4f} | "
            f"{row['test_nll_before']:.4f} → {row['test_nll_after']:.4f} | "
            f"{row['test_ece_before']:.4f} → {row['test_ece_after']:.4f} |"
        )
    lines.append("")
    lines += [f"![{name}]({name})" for name in plot_names]
    return "\n".join(lines) + "\n"


def render_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("plots need matplotlib: pip install 'distree-mqtt[report]'") from error
    paths = []
    for split, result in report["splits"].items():
        figure, axes = plt.subplots(figsize=(7.5, 5), dpi=110)
        for name, criterion in result["criteria"].items():
            curve = criterion["curve"]
            axes.plot(
                [p["expected_macs"] / 1e6 for p in curve],
                [100 * p["accuracy"] for p in curve],
                marker=".",
                markersize=3,
                linewidth=1.2,
                label=name,
            )
            point = criterion["operating_point"]
            axes.scatter(
                [point["expected_macs"] / 1e6], [100 * point["accuracy"]], s=30, edgecolors="black", zorder=5
            )
        for index, fixed in enumerate(result["fixed_exits"]):
            axes.scatter(
                [fixed["expected_macs"] / 1e6], [100 * fixed["accuracy"]], marker="s", color="grey", zorder=4
            )
            axes.annotate(
                f"exit {index}", (fixed["expected_macs"] / 1e6, 100 * fixed["accuracy"]), fontsize=8
            )
        no_exit = result["no_exit"]
        axes.scatter(
            [no_exit["expected_macs"] / 1e6],
            [100 * no_exit["accuracy"]],
            marker="D",
            color="black",
            label="no exit",
            zorder=4,
        )
        best = result["oracle"]
        axes.scatter(
            [best["expected_macs"] / 1e6],
            [100 * best["accuracy"]],
            marker="*",
            s=120,
            color="gold",
            edgecolors="black",
            label="oracle",
            zorder=6,
        )
        lowest = min(f["accuracy"] for f in result["fixed_exits"])
        axes.set_ylim(max(0.0, 100 * lowest - 2), 100 * max(best["accuracy"], no_exit["accuracy"]) + 0.6)
        axes.set_xlabel("expected MACs per sample (millions)")
        axes.set_ylabel("accuracy (%)")
        axes.set_title(f"{report['model_id']}: split '{split}' ({result['samples']} images)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")
        figure.tight_layout()
        path = out_dir / f"tradeoff-{split}.png"
        figure.savefig(path)
        plt.close(figure)
        paths.append(path)
    return paths


def _averaging_note(training: dict[str, Any]) -> str:
    epochs = training.get("averaged_epochs")
    if not epochs:
        return ""
    note = f" The bundle holds the mean of the last {epochs} epochs' weights"
    if "swa_learning_rate" in training:
        rate = training["swa_learning_rate"]
        note += (
            f" (stochastic weight averaging at a constant learning rate of {rate} after the cosine schedule)"
        )
    return note + "."
