"""Orchestrator, device and client logic over an in-memory transport."""

from __future__ import annotations

import json
import time

import pytest

from distree_mqtt.client import Pipeline, RequestRejected, RequestTimeout
from distree_mqtt.device.service import DeviceService
from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.protocol import Policy, Result, Telemetry
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="unit")


def _settings(**sections):
    return load_settings(pipeline="unit", **sections)


def _telemetry(device: str, stage: int, received: int, timestamp: float, compute_ms: float = 5.0) -> str:
    return Telemetry(
        device=device,
        stage_index=stage,
        timestamp=timestamp,
        interval_s=1,
        queue_length=0,
        queue_capacity=64,
        queue_delay_p50_ms=0,
        queue_delay_p95_ms=0,
        compute_p50_ms=compute_ms,
        compute_p95_ms=compute_ms,
        batch_compute_p50_ms=compute_ms,
        received=received,
        processed=received,
        exited=0,
        forwarded=0,
        degraded=0,
        rejected=0,
        errors=0,
        bytes_in=0,
        bytes_out=0,
        policy_version=0,
    ).model_dump_json()


@pytest.fixture
def orchestrator() -> tuple[OrchestratorService, MemoryTransport]:
    transport = MemoryTransport()
    transport.retained[TOPICS.policy] = Policy(version=41, mode="static").model_dump_json().encode()
    service = OrchestratorService(_settings(orchestrator={"latency_target_ms": 50}), transport=transport)
    transport.subscribe(TOPICS.policy, service._on_retained_policy)
    transport.deliver(TOPICS.policy, transport.retained[TOPICS.policy])
    service.start()
    yield service, transport
    service.stop()


def _last_policy(transport: MemoryTransport) -> Policy:
    return Policy.model_validate_json(transport.on(TOPICS.policy)[-1])


def test_a_restarted_orchestrator_continues_the_retained_version(orchestrator) -> None:
    _, transport = orchestrator
    assert _last_policy(transport).version == 42


@pytest.mark.parametrize(
    ("setting", "value", "check"),
    [
        ("mode", "no-exit", lambda p: p.mode == "no-exit" and p.thresholds == [None, None]),
        ("latency_target_ms", "75", lambda p: p.latency_target_ms == 75),
        ("criterion", "entropy", lambda p: p.criterion == "entropy"),
    ],
)
def test_control_commands_publish_a_new_policy(orchestrator, setting, value, check) -> None:
    _, transport = orchestrator
    transport.deliver(TOPICS.control_set(setting), value)
    assert check(_last_policy(transport))


def test_static_thresholds_are_applied_in_static_mode(orchestrator) -> None:
    _, transport = orchestrator
    transport.deliver(TOPICS.control_set("mode"), "static")
    transport.deliver(TOPICS.control_set("static_thresholds"), "[0.5, null]")
    assert _last_policy(transport).thresholds == [0.5, None]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("latency_target_ms", "-1"),
        ("latency_target_ms", "nan"),
        ("latency_target_ms", "fast"),
        ("mode", "turbo"),
        ("static_thresholds", "[1]"),
        ("static_thresholds", "{"),
        ("criterion", "vibes"),
        ("unknown", "1"),
    ],
)
def test_invalid_control_commands_are_rejected_and_reported(orchestrator, setting, value) -> None:
    service, transport = orchestrator
    before = _last_policy(transport)
    transport.deliver(TOPICS.control_set(setting), value)
    assert _last_policy(transport) == before
    error = json.loads(transport.on(TOPICS.errors)[-1])
    assert error["reason"].startswith(f"rejected {setting}")
    assert service.options.latency_target_ms == 50


def test_the_orchestrator_estimates_load_from_telemetry(orchestrator) -> None:
    service, transport = orchestrator
    now = time.time()
    for stage in range(3):
        transport.deliver(TOPICS.status(f"d{stage}"), "online")
        transport.deliver(TOPICS.telemetry(f"d{stage}"), _telemetry(f"d{stage}", stage, 0, now))
        transport.deliver(TOPICS.telemetry(f"d{stage}"), _telemetry(f"d{stage}", stage, 50, now + 1))
    load = service.load_estimate()
    assert load is not None and load.arrival_rate == pytest.approx(50)
    assert [s.replicas for s in load.stages] == [1, 1, 1]
    transport.deliver(TOPICS.status("d2"), "offline")
    assert service.load_estimate() is None  # a stage without devices: keep the last policy
    service.control_step()
    state = json.loads(transport.on(TOPICS.orchestrator_state)[-1])
    assert state["arrival_rate"] is None and state["policy_version"] >= 42


def test_garbage_on_every_orchestrator_topic_is_survived(orchestrator) -> None:
    service, transport = orchestrator
    for topic in (
        TOPICS.telemetry("x"),
        TOPICS.device_info("x"),
        TOPICS.results("x"),
        TOPICS.policy,
        TOPICS.status("x"),
    ):
        for payload in (b"", b"\xff\xfe", b"{", b"[]", json.dumps({"a": 1}).encode()):
            transport.deliver(topic, payload)
    service.control_step()


@pytest.fixture
def device() -> tuple[DeviceService, MemoryTransport]:
    transport = MemoryTransport()
    service = DeviceService(
        _settings(device={"stage_index": 1, "device_id": "dev1", "queue_capacity": 2}), transport=transport
    )
    service.start()
    yield service, transport
    service.stop()


def test_device_announces_itself_and_says_stopped(device) -> None:
    service, transport = device
    assert transport.retained[TOPICS.status("dev1")] == b"online"
    assert json.loads(transport.retained[TOPICS.device_info("dev1")])["stage_index"] == 1
    service.stop()
    assert transport.retained[TOPICS.status("dev1")] == b"stopped"
    assert transport.retained[TOPICS.device_info("dev1")] == b""


def test_device_rejects_garbage_with_an_error_line_and_keeps_going(device) -> None:
    service, transport = device
    for payload in (b"", b"DTRE", b"\x00" * 100, b"DTRE\x01\x00\x00\x00\x02{}"):
        transport.deliver(TOPICS.stage_input(1), payload)
    deadline = time.monotonic() + 5
    while service.counters.rejected < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.counters.rejected == 4
    errors = [json.loads(e) for e in transport.on(TOPICS.errors)]
    assert len(errors) == 4 and all("payload" not in e for e in errors)
    transport.deliver(TOPICS.policy, b"not json")
    assert service.policy.version == 0  # the invalid policy is ignored, the last one stays


def test_client_outcomes_result_rejected_timeout_and_duplicates() -> None:
    transport = MemoryTransport()
    settings = _settings(client={"source": "cam/1", "grace_ms": 0})
    with Pipeline(settings=settings, transport=transport) as client:
        import numpy as np

        image = np.zeros((28, 28), np.uint8)
        ok, rejected, late = (client.submit(image, deadline_ms=2000, request_id=f"r{i}") for i in range(3))
        topic = TOPICS.results("cam/1")
        assert topic.endswith("cam%2F1")
        answer = Result(request_id="r0", source="cam/1", outcome="result", label=3)
        transport.deliver(topic, answer.model_dump_json())
        transport.deliver(topic, answer.model_dump_json())  # QoS 1 redelivery: the same answer
        second = Result(request_id="r0", source="cam/1", outcome="degraded", label=5)
        transport.deliver(topic, second.model_dump_json())  # a different, second answer
        transport.deliver(
            topic,
            Result(
                request_id="r1", source="cam/1", outcome="rejected", reason="overloaded"
            ).model_dump_json(),
        )
        assert ok.result(timeout=1).label == 3
        with pytest.raises(RequestRejected, match="overloaded"):
            rejected.result(timeout=1)
        with pytest.raises(RequestTimeout):
            late.result(timeout=5)
        assert client.duplicates == 1
        assert client.ledger.redelivered == 1
