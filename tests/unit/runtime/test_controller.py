from __future__ import annotations

import pytest

from distree_mqtt.bundle.manifest import ProfilePoint
from distree_mqtt.orchestrator.controller import (
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


def test_moving_back_up_needs_headroom_and_dwell_time() -> None:
    controller = ThresholdController(FRONT, latency_target_ms=150, dwell_s=2.0)
    controller.choose(_load(45), now=0)
    cheap = controller.current
    controller.choose(_load(2), now=0.5)  # load fell, but the dwell time has not passed
    assert controller.current == cheap
    controller.choose(_load(2), now=1.9)
    assert controller.current == cheap
    controller.choose(_load(2), now=2.1)
    assert controller.current > cheap


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
    assert busy[0] == pytest.approx(1.5 * (8 + 2 * 8 * 0.2 / (1 - 0.4)))
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
