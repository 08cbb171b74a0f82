from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from distree_mqtt.bundle.manifest import ProfilePoint
from distree_mqtt.orchestrator.controller import (
    Z95,
    LoadEstimate,
    StageEstimate,
    ThresholdController,
    predict,
    stage_sojourn,
)

FRONT = [
    ProfilePoint(thresholds=[0.0, 0.0], exit_rates=[1.0, 0.0, 0.0], expected_macs=4, accuracy=0.95),
    ProfilePoint(thresholds=[0.8, 0.5], exit_rates=[0.7, 0.2, 0.1], expected_macs=7, accuracy=0.985),
    ProfilePoint(thresholds=[0.95, 0.9], exit_rates=[0.4, 0.3, 0.3], expected_macs=12, accuracy=0.99),
    ProfilePoint(thresholds=[None, None], exit_rates=[0.0, 0.0, 1.0], expected_macs=20, accuracy=0.991),
]
STAGES = [StageEstimate(10, 10, 1), StageEstimate(20, 20, 1), StageEstimate(30, 30, 1)]


def _load(rate: float) -> LoadEstimate:
    return LoadEstimate(arrival_rate=rate, stages=STAGES)


def test_prediction_grows_with_load_and_saturation_is_infeasible() -> None:
    low, high = predict(FRONT[3], _load(5)), predict(FRONT[3], _load(25))
    assert low.feasible and high.feasible and high.p95_ms > low.p95_ms
    assert not predict(FRONT[3], _load(40)).feasible  # 40/s x 30 ms > 1 at the last stage
    assert predict(FRONT[0], _load(40)).feasible  # everything leaves after stage 0


def test_light_load_takes_the_most_accurate_setting() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=500)
    assert controller.choose(_load(2), now=0) is FRONT[3]


def test_heavy_load_moves_to_cheaper_settings_at_once() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=150)
    chosen = controller.choose(_load(45), now=0)
    assert chosen.expected_macs < FRONT[3].expected_macs
    assert predict(chosen, _load(45)).p95_ms <= 150


def test_moving_back_up_waits_for_the_stabilisation_window() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=150, stabilisation_s=10.0)
    controller.choose(_load(45), now=0)
    cheap = controller.current
    for step in range(1, 20):  # the load fell, but 45/s is still within the window
        controller.choose(_load(2), now=step * 0.5)
        assert controller.current == cheap
    for step in range(20, 30):
        controller.choose(_load(2), now=step * 0.5)
    assert controller.current > cheap
    assert controller.last_reason == "headroom"


def test_a_setting_that_had_to_be_left_is_barred_at_that_load() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=150)
    controller.current = 3
    controller.choose(_load(45), now=0)  # a jump: leaves the most accurate setting at once
    assert controller.current < 3 and controller.barred(3, 45, now=1)
    assert not controller.barred(3, 45 * 0.5, now=1)  # much less load: it may be tried again
    assert not controller.barred(3, 45, now=controller.failure_hold_s + 1)  # after the hold
    # Failing again soon after the hold doubles it.
    controller._record_failure(3, 45, now=controller.failure_hold_s + 2)
    assert controller.failures[3].hold_s == 2 * controller.failure_hold_s


def test_a_load_jump_is_acted_on_at_once_and_a_short_burst_is_not() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=150, confirm_s=1.5)
    for step in range(10):
        controller.choose(_load(10), now=step * 0.5)
    settled = controller.current
    assert settled == 2 and controller.verified_rate >= 10
    # A second of 20% more load, which it was not verified for: the queues take it.
    controller.choose(_load(12), now=5.0)
    controller.choose(_load(12), now=5.5)
    controller.choose(_load(10), now=6.0)
    assert controller.current == settled
    # Two and a half times the load: a step, acted on in the same control step.
    controller = ThresholdController(FRONT, latency_target_ms=150)
    for step in range(10):
        controller.choose(_load(10), now=step * 0.5)
    controller.choose(_load(25), now=5.0)
    assert controller.current < settled and controller.last_reason == "load jumped"


def test_steady_load_does_not_oscillate() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=150)
    for step in range(100):
        controller.choose(_load(30), now=step * 0.5)
    assert len(controller.history) <= 2


def test_observed_latency_corrects_the_model() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=150)
    for _ in range(20):
        controller.observe(
            observed_p95_ms=4 * predict(FRONT[controller.current], _load(10)).p95_ms, load=_load(10)
        )
    assert controller.correction > 3
    before = controller.current
    controller.choose(_load(10), now=0)
    assert controller.current < before  # the slower reality makes it cheaper


BATCHING = StageEstimate(
    service_ms=10, batch_ms=10, replicas=1, batch_fixed_ms=8, batch_per_request_ms=2, max_batch=8
)


def test_batching_stage_keeps_up_beyond_one_request_per_batch_time() -> None:
    single = BATCHING.batch_fixed_ms + BATCHING.batch_per_request_ms  # 10 ms: 100/s unbatched
    light = stage_sojourn(20, BATCHING)
    assert light is not None and single <= light[0] < 1.2 * single
    # 200/s is twice what one request per batch allows: batches of 8*0.2/(1-0.4) = 2.67 carry it.
    busy = stage_sojourn(200, BATCHING)
    assert busy is not None
    # Half a batch time on average, then its own batch; plus the M/M/1 wait at full batches
    # (24 ms for 8, 3 ms per request: utilisation 0.6).
    assert busy[0] == pytest.approx(1.5 * (8 + 2 * 8 * 0.2 / (1 - 0.4)) + 0.6 * 3 / (1 - 0.6))
    # Capacity at the largest batch is 8 / (8 + 16) ms = 333/s; near it the stage saturates.
    assert stage_sojourn(330, BATCHING) is None
    assert stage_sojourn(600, BATCHING) is None


def test_batching_model_is_continuous_where_batches_start_to_grow() -> None:
    below = stage_sojourn(99.9, BATCHING)
    above = stage_sojourn(100.1, BATCHING)
    assert below is not None and above is not None
    assert below[0] == pytest.approx(above[0], rel=0.01)
    assert below[1] == pytest.approx(above[1], rel=0.05)


def test_batching_costs_make_settings_feasible_that_per_request_costs_would_not() -> None:
    plain = [StageEstimate(10, 10, 1)] * 3
    batching = [BATCHING] * 3
    heavy = 150.0
    assert not predict(FRONT[3], LoadEstimate(heavy, plain)).feasible
    assert predict(FRONT[3], LoadEstimate(heavy, batching)).feasible


def _simulate_greedy_batching(rate_per_s: float, stage: StageEstimate, count: int = 30_000) -> np.ndarray:
    """Sojourn times (ms) of Poisson arrivals at a server that runs whatever is queued, up to
    the largest batch, in fixed + per_request x b."""
    arrivals = np.cumsum(np.random.default_rng(0).exponential(1000.0 / rate_per_s, count))
    sojourns = np.empty(count)
    clock, first = 0.0, 0
    while first < count:
        clock = max(clock, arrivals[first])
        last = first
        while last < count and last - first < stage.max_batch and arrivals[last] <= clock:
            last += 1
        clock += stage.batch_fixed_ms + stage.batch_per_request_ms * (last - first)
        sojourns[first:last] = clock - arrivals[first:last]
        first = last
    return sojourns[count // 10 :]


@pytest.mark.parametrize("rate", [50, 150, 250, 290])
def test_batching_model_follows_a_simulated_batching_server(rate: float) -> None:
    """Mean and p95 against a discrete-event simulation: close at light load, on the safe
    (slower) side as the stage nears saturation, never far optimistic."""
    sojourn = stage_sojourn(rate, BATCHING)
    assert sojourn is not None
    mean, variance = sojourn
    simulated = _simulate_greedy_batching(rate, BATCHING)
    assert 0.9 * simulated.mean() <= mean <= 1.6 * simulated.mean()
    p95 = mean + Z95 * math.sqrt(variance)
    assert 0.85 * np.percentile(simulated, 95) <= p95 <= 1.6 * np.percentile(simulated, 95)


def test_forwarding_costs_make_settings_that_forward_more_slower_at_stage_0() -> None:
    forwarding = replace(BATCHING, answer_cost_ms=0.1, forward_cost_ms=1.5)
    stages = [forwarding, BATCHING, BATCHING]
    exits_early, forwards = FRONT[1], FRONT[2]  # 30% vs 60% handed on from stage 0
    plain = LoadEstimate(200, [BATCHING] * 3)
    costly = LoadEstimate(200, stages)
    assert predict(forwards, costly).p95_ms - predict(forwards, plain).p95_ms > (
        predict(exits_early, costly).p95_ms - predict(exits_early, plain).p95_ms
    )
    # Stage 0 alone runs out of capacity sooner the more it hands on.
    rate = 215.0
    assert predict(exits_early, LoadEstimate(rate, stages)).feasible
    assert predict(FRONT[3], LoadEstimate(rate, [BATCHING] * 3)).feasible
    assert not predict(FRONT[3], LoadEstimate(rate, stages)).feasible
