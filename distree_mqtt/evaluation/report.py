"""The offline trade-off report of a bundle: JSON, a markdown table and one PNG plot per split."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distree_mqtt.bundle import Manifest, load_network, load_stage
from distree_mqtt.data import DatasetSplits, DataSpec, ImageSet, load_dataset
from distree_mqtt.evaluation.exit_cache import ExitCache, collect_exits
from distree_mqtt.evaluation.tradeoff import (
    COMPARABLE_ACCURACY,
    Outcome,
    apply_settings,
    cheapest_within,
    fixed_exit,
    oracle,
    sweep,
)
from distree_mqtt.model.calibration import expected_calibration_error, negative_log_likelihood
from distree_mqtt.model.criteria import criterion_names, get_criterion
from distree_mqtt.model.multi_exit import MultiExitNetwork
from distree_mqtt.model.training import TrainConfig


@dataclass(frozen=True)
class ReportFiles:
    json_path: Path
    markdown_path: Path
    plot_paths: list[Path]


def cumulative_exit_macs(manifest: Manifest) -> list[int]:
    spent, total = [], 0
    for stage in manifest.stages:
        total += stage.body_macs + stage.head_macs
        spent.append(total)
    return spent


@torch.no_grad()
def split_exactness(
    bundle_dir: Path, network: MultiExitNetwork, manifest: Manifest, images: ImageSet
) -> float:
    """Max |logit difference| between the whole network and stages loaded alone, features
    passed between them as raw float32 bytes as a device would receive them."""
    batch = manifest.input.normalise(torch.from_numpy(images.images[:256]))
    whole = [output.logits for output in network(batch)]
    features = batch
    worst = 0.0
    for index in range(len(manifest.stages)):
        stage = load_stage(bundle_dir, index, manifest)
        wire = features.contiguous().numpy().astype(np.float32).tobytes()
        received = torch.from_numpy(np.frombuffer(wire, dtype=np.float32).reshape(features.shape).copy())
        features, output = stage(received)
        worst = max(worst, float((output.logits - whole[index]).abs().max()))
    return worst


def _outcome_dict(result: Outcome, no_exit_macs: int) -> dict[str, Any]:
    return asdict(result) | {"macs_saving": 1.0 - result.expected_macs / no_exit_macs}


def evaluate_split(validation: ExitCache, test: ExitCache, manifest: Manifest) -> dict[str, Any]:
    temperatures = [stage.temperature for stage in manifest.stages]
    macs = cumulative_exit_macs(manifest)
    no_exit = manifest.no_exit_macs
    val_correct, test_correct = validation.correct(), test.correct()
    final_test_accuracy = float(test_correct[-1].mean())
    oracle_result = oracle(test_correct, macs)
    oracle_saving = 1.0 - oracle_result.expected_macs / no_exit
    result: dict[str, Any] = {
        "samples": int(test_correct.shape[1]),
        "no_exit": {"accuracy": final_test_accuracy, "expected_macs": float(no_exit), "macs_saving": 0.0},
        "fixed_exits": [_outcome_dict(fixed_exit(test_correct, macs, k), no_exit) for k in range(len(macs))],
        "oracle": _outcome_dict(oracle_result, no_exit),
        "criteria": {},
    }
    for name in criterion_names():
        criterion = get_criterion(name)
        val_scores = validation.scores(criterion, temperatures)
        front = sweep(val_scores, val_correct, macs)
        test_scores = test.scores(criterion, temperatures)
        curve = apply_settings(front, test_scores, test_correct, macs)
        chosen = cheapest_within(front, val_scores, val_correct, COMPARABLE_ACCURACY)
        measured = apply_settings([chosen], test_scores, test_correct, macs)[0]
        saving = 1.0 - measured.expected_macs / no_exit
        result["criteria"][name] = {
            "operating_point": {
                "thresholds": chosen.thresholds,
                "validation_accuracy": chosen.accuracy,
                "validation_loss_points": 100.0 * chosen.loss,
                "validation_loss_error_points": 100.0 * chosen.loss_standard_error,
                **_outcome_dict(measured, no_exit),
                "accuracy_loss_points": 100.0 * (final_test_accuracy - measured.accuracy),
                "share_of_oracle_saving": saving / oracle_saving if oracle_saving > 0 else 0.0,
            },
            "curve": [{"expected_macs": point.expected_macs, "accuracy": point.accuracy} for point in curve],
        }
    return result


def _calibration_table(manifest: Manifest, test: ExitCache) -> list[dict[str, float]]:
    rows = []
    for index, (entry, logits) in enumerate(zip(manifest.calibration, test.logits, strict=True)):
        rows.append(
            {
                "exit": index,
                "temperature": entry.temperature,
                "val_nll_before": entry.nll_before,
                "val_nll_after": entry.nll_after,
                "val_ece_before": entry.ece_before,
                "val_ece_after": entry.ece_after,
                "test_nll_before": negative_log_likelihood(logits, test.labels),
                "test_nll_after": negative_log_likelihood(logits, test.labels, entry.temperature),
                "test_ece_before": expected_calibration_error(logits, test.labels),
                "test_ece_after": expected_calibration_error(logits, test.labels, entry.temperature),
            }
        )
    return rows


def load_evaluation_data(config_path: Path | None) -> DatasetSplits:
    spec = TrainConfig.from_toml(config_path).data if config_path else DataSpec(name="mnist")
    return load_dataset(spec)


def evaluate_bundle(
    bundle_dir: Path, config_path: Path | None, out_dir: Path, title: str | None = None
) -> ReportFiles:
    manifest, network = load_network(bundle_dir)
    data = load_evaluation_data(config_path)
    if tuple(data.test.images.shape[1:]) != tuple(manifest.input.shape):
        raise ValueError(
            f"data images are {tuple(data.test.images.shape[1:])} but the bundle expects {tuple(manifest.input.shape)}"
        )
    validation = collect_exits(network, data.val, manifest.input)
    splits = {"test": data.test, **data.extra_tests}
    caches = {name: collect_exits(network, images, manifest.input) for name, images in splits.items()}
    report: dict[str, Any] = {
        "title": title or f"Offline trade-off of {manifest.model_id}",
        "model_id": manifest.model_id,
        "content_hash": manifest.content_hash,
        "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "stages": [
            {
                "index": stage.index,
                "body_macs": stage.body_macs,
                "head_macs": stage.head_macs,
                "parameters": stage.parameters,
                "output_shape": stage.output_shape,
                "weights_bytes": (Path(bundle_dir) / stage.weights_file).stat().st_size,
            }
            for stage in manifest.stages
        ],
        "exit_macs": cumulative_exit_macs(manifest),
        "no_exit_macs": manifest.no_exit_macs,
        "split_max_abs_logit_difference": split_exactness(bundle_dir, network, manifest, data.test),
        "training": manifest.training,
        "default_criterion": manifest.exit_policy.default_criterion,
        "calibration": _calibration_table(manifest, caches["test"]),
        "tolerance_points": 100 * COMPARABLE_ACCURACY.tolerance,
        "selection_confidence_z": COMPARABLE_ACCURACY.confidence_z,
        "splits": {name: evaluate_split(validation, cache, manifest) for name, cache in caches.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    from distree_mqtt.evaluation.render import render_markdown, render_plots

    markdown_path = out_dir / "report.md"
    plot_paths = render_plots(report, out_dir)
    markdown_path.write_text(render_markdown(report, [path.name for path in plot_paths]))
    return ReportFiles(json_path, markdown_path, plot_paths)
