"""Regressions for what the fuzz campaign (`distree bench fuzz`) found in the runtime."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from distree_mqtt.device.runner import RejectedInput, StageRunner
from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.wire import EnvelopeHeader, TensorInfo, decode_envelope, encode_envelope, get_codec
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="findings")
LIMIT = 1 << 22


def _envelope(runner: StageRunner, created_at: float, dtype: str = "float32") -> bytes:
    stage = runner.stage_index
    shape = list(runner.entry.input_shape)
    if stage == 0:
        payload, tensor = (
            bytes(28 * 28),
            TensorInfo(kind="image", codec="raw", dtype="uint8", shape=[28, 28, 1], payload_bytes=0, crc32=0),
        )
    else:
        payload = get_codec("float32").encode(np.zeros(shape, np.float32))
        tensor = TensorInfo(
            kind="features", codec="float32", dtype=dtype, shape=shape, payload_bytes=0, crc32=0
        )  # type: ignore[arg-type]
    header = EnvelopeHeader(
        request_id="r-1",
        source="s",
        model_hash=runner.model_hash,
        stage_index=stage,
        created_at=created_at,
        deadline=created_at + 1,
        exit_probabilities=[[0.1] * 10] * stage,
        tensor=tensor,
    )
    return encode_envelope(header, payload)


def test_a_request_created_over_a_day_ago_is_rejected() -> None:
    """Its result would carry a latency of decades into the orchestrator's window."""
    runner = StageRunner(reference_bundle("mnist"), 0, "int8+zstd", "d0")
    now = time.time()
    runner.prepare(decode_envelope(_envelope(runner, now - 3600), LIMIT), now, 1)
    with pytest.raises(RejectedInput, match="created over a day ago"):
        runner.prepare(decode_envelope(_envelope(runner, now - 2 * 86400), LIMIT), now, 1)


def test_features_declared_as_another_dtype_are_rejected() -> None:
    runner = StageRunner(reference_bundle("mnist"), 1, "int8+zstd", "d1")
    now = time.time()
    runner.prepare(decode_envelope(_envelope(runner, now), LIMIT), now, 1)
    with pytest.raises(RejectedInput, match="features must be float32"):
        runner.prepare(decode_envelope(_envelope(runner, now, dtype="uint8"), LIMIT), now, 1)


@pytest.fixture
def orchestrator():
    transport = MemoryTransport()
    service = OrchestratorService(load_settings(pipeline="findings"), transport=transport)
    service.start()
    yield service, transport
    service.stop()


def test_an_invalid_result_is_reported_on_errors(orchestrator) -> None:
    _, transport = orchestrator
    transport.deliver(TOPICS.results("cam"), b"\xff not a result")
    (entry,) = [json.loads(payload) for payload in transport.on(TOPICS.errors)]
    assert entry["topic"] == TOPICS.results("cam") and entry["reason"] == "invalid result"


def test_telemetry_whose_rates_overflow_leaves_the_state_publishable(orchestrator) -> None:
    """Finite numbers within the schema (timestamps 5e-324 apart, 2**63 requests, 1.8e308 ms)
    once made the arrival rate and utilisation infinite, and every control step failed."""
    service, transport = orchestrator
    report = {
        "interval_s": 1, "queue_length": 0, "queue_capacity": 4, "queue_delay_p50_ms": 0,
        "queue_delay_p95_ms": 0, "compute_p50_ms": 1.7976931348623157e308, "compute_p95_ms": 1,
        "processed": 0, "exited": 0, "forwarded": 0, "degraded": 0, "rejected": 0, "errors": 0,
        "bytes_in": 0, "bytes_out": 0, "policy_version": 0,
    }  # fmt: skip
    for stage in range(3):
        device = f"ghost-{stage}"
        transport.deliver(TOPICS.status(device), "online")
        for timestamp, received in ((5e-324, 0), (1e-323, 2**63)):
            telemetry = {
                **report,
                "device": device,
                "stage_index": stage,
                "timestamp": timestamp,
                "received": received,
            }
            transport.deliver(TOPICS.telemetry(device), json.dumps(telemetry))
    service.control_step()
    state = json.loads(transport.on(TOPICS.orchestrator_state)[-1])
    assert state["arrival_rate"] is None and None in state["utilisation"]
