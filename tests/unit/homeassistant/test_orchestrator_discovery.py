"""The orchestrator announces the pipeline and each device, and publishes the figures they show."""

from __future__ import annotations

import json

import pytest

from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.protocol import DeviceInfo, Result
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="unit")
PIPELINE_CONFIG = "homeassistant/device/distree_unit/config"


@pytest.fixture
def orchestrator():
    transport = MemoryTransport()
    service = OrchestratorService(load_settings(pipeline="unit"), transport=transport)
    service.start()
    yield service, transport
    service.stop()


def _descriptor(device: str, stage: int) -> str:
    return DeviceInfo(
        device=device,
        stage_index=stage,
        num_stages=3,
        model_id="m",
        model_hash="0" * 64,
        codec="int8",
        started_at=1.0,
    ).model_dump_json()


def test_pipeline_discovery_on_start_and_again_when_home_assistant_is_online(orchestrator) -> None:
    _, transport = orchestrator
    assert len(transport.on(PIPELINE_CONFIG)) == 1
    payload = json.loads(transport.retained[PIPELINE_CONFIG])
    assert {f"exit_rate_stage_{k}" for k in range(3)} <= set(payload["cmps"])
    transport.deliver("homeassistant/status", "online")
    assert len(transport.on(PIPELINE_CONFIG)) == 2


def test_devices_are_announced_when_they_appear_and_withdrawn_on_a_clean_stop(orchestrator) -> None:
    _, transport = orchestrator
    topic = "homeassistant/device/distree_unit_gw-1/config"
    transport.deliver(TOPICS.device_info("gw-1"), _descriptor("gw-1", 1))
    payload = json.loads(transport.retained[topic])
    assert payload["dev"]["via_device"] == "distree_unit"
    assert payload["cmps"]["queue_delay"]["stat_t"] == TOPICS.telemetry("gw-1")
    transport.deliver(TOPICS.device_info("gw-1"), _descriptor("gw-1", 1))  # repeated: no new message
    assert len(transport.on(topic)) == 1
    transport.deliver("homeassistant/status", "online")
    assert len(transport.on(topic)) == 2
    transport.deliver(TOPICS.device_info("gw-1"), b"")
    assert transport.retained[topic] == b""
    # a descriptor on another device's topic is not announced
    transport.deliver(TOPICS.device_info("gw-2"), _descriptor("gw-3", 0))
    assert "homeassistant/device/distree_unit_gw-3/config" not in transport.retained


def test_state_carries_rate_exit_shares_and_last_result(orchestrator) -> None:
    service, transport = orchestrator
    for index, stage in enumerate([0, 0, 1, 2]):
        result = Result(
            request_id=f"r{index}",
            source="s",
            outcome="result",
            label=3,
            class_name="3",
            confidence=0.9,
            exit_stage=stage,
            latency_ms=10.0,
        )
        transport.deliver(TOPICS.results("s"), result.model_dump_json())
    transport.deliver(
        TOPICS.results("s"), Result(request_id="x", source="s", outcome="rejected").model_dump_json()
    )
    service.control_step()
    state = json.loads(transport.on(TOPICS.orchestrator_state)[-1])
    assert state["exit_rates"] == [0.5, 0.25, 0.25]
    assert state["requests_per_second"] == pytest.approx(5 / service.options.window_s)
    assert state["last_result"]["outcome"] == "rejected"


def test_discovery_can_be_switched_off() -> None:
    transport = MemoryTransport()
    service = OrchestratorService(
        load_settings(pipeline="unit", homeassistant={"enabled": False}), transport=transport
    )
    service.start()
    service.stop()
    assert not [topic for topic, _, _ in transport.published if topic.startswith("homeassistant/")]
