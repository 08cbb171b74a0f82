"""Threshold sweeps: which exit each sample leaves at, what it costs, how often it is right.

Settings are chosen on the validation split (the profile a bundle ships) and then measured on
the test split, so the reported savings are not fitted to the data they are reported on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from distree_mqtt.bundle.manifest import OperatingPoint, ProfilePoint

MAX_GRID_SETTINGS = 6000


@dataclass(frozen=True)
class Outcome:
    exit_rates: list[float]
    expected_macs: float
    accuracy: float


def threshold_array(thresholds: list[float | None]) -> np.ndarray:
    """Profile thresholds as numbers: null (never exit) becomes +inf."""
    return np.asarray([np.inf if t is None else t for t in thresholds], dtype=np.float64)


def exit_indices(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """First early exit whose score clears its threshold, else the final exit."""
    num_early = scores.shape[0]
    leaves = scores >= thresholds[:, None]
    chosen = np.full(scores.shape[1], num_early, dtype=np.int64)
    for k in reversed(range(num_early)):
        chosen = np.where(leaves[k], k, chosen)
    return chosen


def outcome(exits: np.ndarray, correct: np.ndarray, exit_macs: list[int]) -> Outcome:
    count = len(exits)
    rates = np.bincount(exits, minlength=correct.shape[0]) / count
    return Outcome(
        exit_rates=[float(rate) for rate in rates],
        expected_macs=float(np.asarray(exit_macs, dtype=np.float64)[exits].mean()),
        accuracy=float(correct[exits, np.arange(count)].mean()),
    )


def candidate_thresholds(scores: np.ndarray, per_exit: int) -> list[np.ndarray]:
    """Quantiles of each exit's validation scores, plus +inf (never exit here)."""
    quantiles = np.linspace(0.0, 1.0, per_exit)
    return [np.unique(np.append(np.quantile(row, quantiles), np.inf)) for row in scores]


def sweep(
    scores: np.ndarray, correct: np.ndarray, exit_macs: list[int], per_exit: int | None = None
) -> list[ProfilePoint]:
    """Every combination of per-exit thresholds on a grid; returns the Pareto front."""
    num_early = scores.shape[0]
    if per_exit is None:
        per_exit = max(3, int(MAX_GRID_SETTINGS ** (1 / max(1, num_early))) - 1)
    grids = candidate_thresholds(scores, per_exit)
    points: list[ProfilePoint] = []
    for combination in itertools.product(*grids):
        thresholds = np.asarray(combination)
        result = outcome(exit_indices(scores, thresholds), correct, exit_macs)
        points.append(
            ProfilePoint(
                thresholds=[None if np.isinf(t) else float(t) for t in thresholds],
                exit_rates=result.exit_rates,
                expected_macs=result.expected_macs,
                accuracy=result.accuracy,
            )
        )
    return pareto_front(points)


def pareto_front(points: list[ProfilePoint]) -> list[ProfilePoint]:
    """Settings no other setting beats on both cost and accuracy, cheapest first."""
    front: list[ProfilePoint] = []
    for point in sorted(points, key=lambda p: (p.expected_macs, -p.accuracy)):
        if not front or point.accuracy > front[-1].accuracy:
            front.append(point)
    return front


def thin(front: list[ProfilePoint], keep: int) -> list[ProfilePoint]:
    """At most `keep` points spread evenly along the front, both ends kept."""
    if len(front) <= keep:
        return front
    index = np.unique(np.round(np.linspace(0, len(front) - 1, keep)).astype(int))
    return [front[i] for i in index]


def apply_settings(
    front: list[ProfilePoint], scores: np.ndarray, correct: np.ndarray, exit_macs: list[int]
) -> list[Outcome]:
    """Measure settings chosen elsewhere (validation) on other data (test)."""
    return [
        outcome(exit_indices(scores, threshold_array(point.thresholds)), correct, exit_macs)
        for point in front
    ]


@dataclass(frozen=True)
class Selection:
    """How an operating point is picked on validation data. The loss is paired per image (the
    final exit's answer against the policy's), so its standard error is small and honest; asking
    that loss plus `confidence_z` standard errors to stay within `tolerance` keeps the point from
    being fitted to the validation split's luck."""

    tolerance: float = 0.005
    confidence_z: float = 1.0


# "Comparable accuracy": half a point below the final exit, one standard error to spare. Bundles'
# operating points and the offline report's measured savings both use it.
COMPARABLE_ACCURACY = Selection()


def paired_loss(exits: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Accuracy loss against the final exit and its standard error, from per-image differences."""
    count = correct.shape[1]
    difference = correct[-1].astype(np.float64) - correct[exits, np.arange(count)]
    error = float(difference.std(ddof=1) / np.sqrt(count)) if count > 1 else 0.0
    return float(difference.mean()), error


def cheapest_within(
    front: list[ProfilePoint], scores: np.ndarray, correct: np.ndarray, selection: Selection
) -> OperatingPoint:
    """The cheapest validation setting whose loss against the final exit, plus its margin of
    error, is within the tolerance; the most accurate setting when none is."""

    def measured(point: ProfilePoint) -> OperatingPoint:
        loss, error = paired_loss(exit_indices(scores, threshold_array(point.thresholds)), correct)
        return OperatingPoint(**point.model_dump(), loss=loss, loss_standard_error=error)

    for point in sorted(front, key=lambda p: p.expected_macs):
        candidate = measured(point)
        if candidate.loss + selection.confidence_z * candidate.loss_standard_error <= selection.tolerance:
            return candidate
    return measured(max(front, key=lambda p: p.accuracy))


def oracle(correct: np.ndarray, exit_macs: list[int]) -> Outcome:
    """Leaves at the earliest correct exit (the final one if none is): a bound, not a policy."""
    any_correct = correct.any(axis=0)
    earliest = np.where(any_correct, correct.argmax(axis=0), correct.shape[0] - 1)
    return outcome(earliest, correct, exit_macs)


def fixed_exit(correct: np.ndarray, exit_macs: list[int], k: int) -> Outcome:
    return outcome(np.full(correct.shape[1], k), correct, exit_macs)
