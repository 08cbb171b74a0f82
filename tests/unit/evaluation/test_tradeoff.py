from __future__ import annotations

import numpy as np
import pytest

from distree_mqtt.bundle.manifest import ProfilePoint
from distree_mqtt.evaluation.tradeoff import (
    Selection,
    cheapest_within,
    exit_indices,
    oracle,
    paired_loss,
    pareto_front,
    sweep,
    threshold_array,
)

MACS = [10, 30, 60]


def test_exit_index_is_the_first_exit_that_clears_its_threshold() -> None:
    scores = np.array([[0.9, 0.2, 0.2], [0.5, 0.95, 0.1]])
    assert exit_indices(scores, np.array([0.8, 0.9])).tolist() == [0, 1, 2]
    assert exit_indices(scores, np.array([np.inf, np.inf])).tolist() == [2, 2, 2]


def test_oracle_takes_the_earliest_correct_exit() -> None:
    correct = np.array([[True, False, False], [True, True, False], [True, True, False]])
    result = oracle(correct, MACS)
    assert result.exit_rates == [1 / 3, 1 / 3, 1 / 3]
    assert result.accuracy == 2 / 3
    assert result.expected_macs == (10 + 30 + 60) / 3


def test_sweep_returns_a_front_that_dominates_every_setting() -> None:
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(size=300)
    correct = np.stack([difficulty < 0.6, difficulty < 0.8, difficulty < 0.95])
    scores = np.stack([1 - difficulty + rng.normal(0, 0.1, 300), 1 - difficulty + rng.normal(0, 0.1, 300)])
    front = sweep(scores, correct, MACS, per_exit=15)
    costs = [p.expected_macs for p in front]
    accuracies = [p.accuracy for p in front]
    assert costs == sorted(costs) and accuracies == sorted(accuracies)
    assert front[-1].accuracy >= correct[-1].mean()  # never worse than the final exit
    assert front[0].expected_macs < np.mean(MACS[-1])
    chosen = cheapest_within(front, scores, correct, Selection(tolerance=0.01, confidence_z=0.0))
    assert chosen.accuracy >= correct[-1].mean() - 0.01


def _difficulty_problem(samples: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(size=samples)
    correct = np.stack([difficulty < 0.7, difficulty < 0.85, difficulty < 0.9])
    scores = np.stack(
        [1 - difficulty + rng.normal(0, 0.2, samples), 1 - difficulty + rng.normal(0, 0.2, samples)]
    )
    return scores, correct


def test_paired_loss_is_the_mean_per_image_difference_with_its_standard_error() -> None:
    correct = np.array([[True, False, True, False], [True, True, True, False]])
    # Images 0 and 2 leave early; image 1 is lost by leaving early, image 3 is wrong either way.
    loss, error = paired_loss(np.array([0, 0, 0, 1]), correct)
    assert loss == pytest.approx(0.25)
    assert error == pytest.approx(np.std([0, 1, 0, 0], ddof=1) / 2)
    assert paired_loss(np.array([1, 1, 1, 1]), correct) == (0.0, 0.0)


def test_without_a_margin_of_error_selection_is_the_cheapest_point_within_the_tolerance() -> None:
    scores, correct = _difficulty_problem()
    front = sweep(scores, correct, MACS, per_exit=25)
    final = float(correct[-1].mean())
    chosen = cheapest_within(front, scores, correct, Selection(tolerance=0.005, confidence_z=0.0))
    eligible = [p for p in front if p.accuracy >= final - 0.005 - 1e-12]
    cheapest = min(eligible, key=lambda p: p.expected_macs)
    assert chosen.thresholds == cheapest.thresholds and chosen.expected_macs == cheapest.expected_macs
    # The chosen point carries the evidence it was chosen on.
    loss, error = paired_loss(exit_indices(scores, threshold_array(chosen.thresholds)), correct)
    assert (chosen.loss, chosen.loss_standard_error) == (loss, error)
    assert chosen.loss == pytest.approx(final - chosen.accuracy)


def test_a_margin_of_error_picks_a_costlier_point_whose_loss_bound_is_within_the_tolerance() -> None:
    scores, correct = _difficulty_problem()
    front = sweep(scores, correct, MACS, per_exit=25)
    plain = cheapest_within(front, scores, correct, Selection(tolerance=0.005, confidence_z=0.0))
    careful = cheapest_within(front, scores, correct, Selection(tolerance=0.005, confidence_z=2.0))
    assert careful.expected_macs > plain.expected_macs
    loss, error = paired_loss(exit_indices(scores, threshold_array(careful.thresholds)), correct)
    assert error > 0 and loss + 2.0 * error <= 0.005
    plain_loss, plain_error = paired_loss(exit_indices(scores, threshold_array(plain.thresholds)), correct)
    assert plain_loss + 2.0 * plain_error > 0.005


def test_when_no_point_is_within_the_tolerance_the_most_accurate_one_is_chosen() -> None:
    scores, correct = _difficulty_problem(200)
    front = sweep(scores, correct, MACS, per_exit=10)
    chosen = cheapest_within(front, scores, correct, Selection(tolerance=-0.5, confidence_z=1.0))
    assert chosen.accuracy == max(p.accuracy for p in front)


def test_pareto_front_drops_dominated_points() -> None:
    def point(macs: float, accuracy: float) -> ProfilePoint:
        return ProfilePoint(thresholds=[0.5], exit_rates=[0.5, 0.5], expected_macs=macs, accuracy=accuracy)

    front = pareto_front([point(10, 0.8), point(20, 0.7), point(30, 0.9), point(30, 0.85)])
    assert [(p.expected_macs, p.accuracy) for p in front] == [(10, 0.8), (30, 0.9)]
