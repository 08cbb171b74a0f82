from __future__ import annotations

import numpy as np

from distree_mqtt.bundle.manifest import ProfilePoint
from distree_mqtt.evaluation.tradeoff import cheapest_within, exit_indices, oracle, pareto_front, sweep

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
    chosen = cheapest_within(front, float(correct[-1].mean()), 0.01)
    assert chosen.accuracy >= correct[-1].mean() - 0.01


def test_pareto_front_drops_dominated_points() -> None:
    def point(macs: float, accuracy: float) -> ProfilePoint:
        return ProfilePoint(thresholds=[0.5], exit_rates=[0.5, 0.5], expected_macs=macs, accuracy=accuracy)

    front = pareto_front([point(10, 0.8), point(20, 0.7), point(30, 0.9), point(30, 0.85)])
    assert [(p.expected_macs, p.accuracy) for p in front] == [(10, 0.8), (30, 0.9)]
