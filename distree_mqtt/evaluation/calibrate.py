"""From a trained network to a bundle: calibrate every exit and profile every criterion."""

from __future__ import annotations

from pathlib import Path

from distree_mqtt.bundle.manifest import (
    CalibrationEntry,
    ExitPolicyProfile,
    Manifest,
    OperatingPoint,
    ProfilePoint,
)
from distree_mqtt.bundle.writer import write_bundle
from distree_mqtt.evaluation.exit_cache import ExitCache, collect_exits
from distree_mqtt.evaluation.tradeoff import COMPARABLE_ACCURACY, cheapest_within, sweep, thin
from distree_mqtt.model.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from distree_mqtt.model.criteria import criterion_names, get_criterion
from distree_mqtt.model.flops import exit_macs, stage_costs
from distree_mqtt.model.training import TrainedModel

PROFILE_POINTS = 48


def calibrate(cache: ExitCache) -> list[CalibrationEntry]:
    entries = []
    for logits in cache.logits:
        temperature = fit_temperature(logits, cache.labels)
        entries.append(
            CalibrationEntry(
                temperature=temperature,
                nll_before=negative_log_likelihood(logits, cache.labels),
                nll_after=negative_log_likelihood(logits, cache.labels, temperature),
                ece_before=expected_calibration_error(logits, cache.labels),
                ece_after=expected_calibration_error(logits, cache.labels, temperature),
            )
        )
    return entries


def profile_criteria(
    cache: ExitCache, temperatures: list[float], macs_per_exit: list[int]
) -> ExitPolicyProfile:
    """Pareto fronts per criterion on validation data, each with its operating point at
    comparable accuracy; the default criterion is the one whose operating point is cheapest."""
    correct = cache.correct()
    profiles = {}
    chosen = {}
    for name in criterion_names():
        scores = cache.scores(get_criterion(name), temperatures)
        front = sweep(scores, correct, macs_per_exit)
        chosen[name] = cheapest_within(front, scores, correct, COMPARABLE_ACCURACY)
        profiles[name] = with_point(thin(front, PROFILE_POINTS), chosen[name])
    default = min(chosen, key=lambda name: chosen[name].expected_macs)
    return ExitPolicyProfile(default_criterion=default, profiles=profiles, operating_points=chosen)


def with_point(front: list[ProfilePoint], point: OperatingPoint) -> list[ProfilePoint]:
    """Thinning may drop the operating point; the orchestrator should be able to pick it too."""
    plain = point.profile_point()
    if plain in front:
        return front
    return sorted([*front, plain], key=lambda p: p.expected_macs)


def export_bundle(trained: TrainedModel, bundle_dir: Path, show_progress: bool = True) -> Manifest:
    network, spec = trained.network, trained.input_spec
    validation = collect_exits(network, trained.data.val, spec, show_progress=show_progress)
    calibration = calibrate(validation)
    temperatures = [entry.temperature for entry in calibration]
    macs_per_exit = exit_macs(stage_costs(network, tuple(spec.shape)))
    policy = profile_criteria(validation, temperatures, macs_per_exit)
    history = trained.history
    training: dict[str, float | int | str] = {
        "config_name": trained.config.name,
        "epochs": len(history),
        "train_seconds": round(sum(record["seconds"] for record in history), 1),
        "threads": trained.config.train.threads,
        "hardware": trained.hardware,
        "seed": trained.config.train.seed,
    }
    training |= {f"val_accuracy_exit_{k}": value for k, value in enumerate(trained.validation)}
    if trained.averaged_epochs:
        training["averaged_epochs"] = trained.averaged_epochs
    if trained.config.train.swa_epochs:
        training["swa_learning_rate"] = trained.config.train.swa_learning_rate
    return write_bundle(
        bundle_dir, trained.config.name, trained.config.model, spec, network, calibration, policy, training
    )
