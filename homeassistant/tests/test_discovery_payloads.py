"""The project's actual discovery messages, injected into Home Assistant's MQTT integration.

The payloads come from distree_mqtt.homeassistant (imported from the repository: that module
needs neither torch nor an MQTT client), so these tests check what the services publish.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from homeassistant.components.image.const import DATA_COMPONENT as IMAGE_COMPONENT
from homeassistant.components.mqtt.abbreviations import (
    ABBREVIATIONS as HA_ABBREVIATIONS,
)
from homeassistant.components.mqtt.abbreviations import (
    DEVICE_ABBREVIATIONS as HA_DEVICE_ABBREVIATIONS,
)
from homeassistant.components.mqtt.abbreviations import (
    ORIGIN_ABBREVIATIONS as HA_ORIGIN_ABBREVIATIONS,
)
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import async_fire_mqtt_message, async_fire_time_changed

from distree_mqtt.homeassistant.discovery import (
    ABBREVIATIONS,
    DEVICE_ABBREVIATIONS,
    ORIGIN_ABBREVIATIONS,
    DeviceDiscovery,
    Origin,
)
from distree_mqtt.homeassistant.entities import camera_discovery, edge_device_discovery, pipeline_discovery
from distree_mqtt.topics import Topics

from .conftest import jpeg_bytes

TOPICS = Topics(pipeline="home")
# Messages below are fired without the retain flag even where the topic is retained: a broker
# sets the flag only when it replays a retained message to a new subscriber, and Home Assistant
# drops a second retained delivery of one topic to the same subscription.
ORIGIN = Origin(support_url="https://example.invalid/distree")


def _announce(hass: HomeAssistant, discovery: DeviceDiscovery, legacy: bool = False) -> None:
    for topic, payload in discovery.messages("homeassistant", legacy=legacy):
        async_fire_mqtt_message(hass, topic, payload, retain=True)


def _entity_id(hass: HomeAssistant, platform: str, unique_id: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(platform, "mqtt", unique_id)
    assert entity_id is not None, f"no {platform} entity with unique id {unique_id}"
    return entity_id


def _state(hass: HomeAssistant, platform: str, unique_id: str) -> str:
    state = hass.states.get(_entity_id(hass, platform, unique_id))
    assert state is not None
    return state.state


def test_our_abbreviations_are_home_assistants() -> None:
    for full, short in ABBREVIATIONS.items():
        assert HA_ABBREVIATIONS.get(short) == full, (short, full)
    for table, theirs in (
        (DEVICE_ABBREVIATIONS, HA_DEVICE_ABBREVIATIONS),
        (ORIGIN_ABBREVIATIONS, HA_ORIGIN_ABBREVIATIONS),
    ):
        for full, short in table.items():
            assert short == full or theirs.get(short) == full, (short, full)


@pytest.mark.parametrize("legacy", [False, True], ids=["device-based", "per-component"])
async def test_pipeline_entities_states_availability_and_controls(
    hass: HomeAssistant, mqtt_mock_entry, legacy: bool
) -> None:
    mqtt_mock = await mqtt_mock_entry()
    _announce(hass, pipeline_discovery(TOPICS, 3, model_id="mnist", origin=ORIGIN), legacy)
    await hass.async_block_till_done()

    device = dr.async_get(hass).async_get_device(identifiers={("mqtt", "distree_home")})
    assert device is not None and device.name == "distree home" and device.manufacturer == "distree-mqtt"
    registry = er.async_get(hass)
    unique_ids = [
        ("sensor", "last_result"),
        ("sensor", "confidence"),
        ("sensor", "exit_stage"),
        ("sensor", "latency_p95"),
        ("sensor", "within_target"),
        ("sensor", "requests_per_second"),
        ("sensor", "exit_rate_stage_0"),
        ("sensor", "exit_rate_stage_2"),
        ("number", "latency_target"),
        ("select", "policy_mode"),
    ]
    for platform, object_id in unique_ids:
        entry = registry.async_get(_entity_id(hass, platform, f"distree_home_{object_id}"))
        assert entry is not None and entry.device_id == device.id
        # no orchestrator status yet: unavailable
        assert _state(hass, platform, f"distree_home_{object_id}") == STATE_UNAVAILABLE

    async_fire_mqtt_message(hass, "distree/home/status/orchestrator", "online")
    await hass.async_block_till_done()
    assert _state(hass, "sensor", "distree_home_last_result") == STATE_UNKNOWN

    state = {
        "policy_version": 3,
        "mode": "adaptive",
        "latency_target_ms": 250.0,
        "observed_p95_ms": 182.5,
        "share_within_target": 0.97,
        "results_in_window": 40,
        "requests_per_second": 8.0,
        "exit_rates": [0.5, 0.25, 0.25],
        "last_result": {
            "outcome": "result",
            "class_name": "cat",
            "label": 3,
            "confidence": 0.912,
            "exit_stage": 1,
        },
    }
    async_fire_mqtt_message(hass, "distree/home/orchestrator/state", json.dumps(state))
    policy = {
        "version": 3,
        "mode": "static",
        "criterion": "max_softmax",
        "thresholds": [0.9, 0.8],
        "latency_target_ms": 250,
    }
    async_fire_mqtt_message(hass, "distree/home/control/policy", json.dumps(policy))
    await hass.async_block_till_done()
    assert _state(hass, "sensor", "distree_home_last_result") == "cat"
    last = hass.states.get(_entity_id(hass, "sensor", "distree_home_last_result"))
    assert last is not None and last.attributes["exit_stage"] == 1
    assert float(_state(hass, "sensor", "distree_home_confidence")) == pytest.approx(91.2)
    assert _state(hass, "sensor", "distree_home_exit_stage") == "1"
    assert float(_state(hass, "sensor", "distree_home_latency_p95")) == pytest.approx(182.5)
    assert float(_state(hass, "sensor", "distree_home_within_target")) == pytest.approx(97.0)
    assert float(_state(hass, "sensor", "distree_home_requests_per_second")) == pytest.approx(8.0)
    assert float(_state(hass, "sensor", "distree_home_exit_rate_stage_0")) == pytest.approx(50.0)
    assert float(_state(hass, "sensor", "distree_home_exit_rate_stage_2")) == pytest.approx(25.0)
    assert float(_state(hass, "number", "distree_home_latency_target")) == pytest.approx(250.0)
    assert _state(hass, "select", "distree_home_policy_mode") == "static"

    # too few results for a p95, none yet: unknown rather than a made-up number
    quiet = {
        **state,
        "observed_p95_ms": None,
        "results_in_window": 0,
        "exit_rates": None,
        "last_result": None,
    }
    async_fire_mqtt_message(hass, "distree/home/orchestrator/state", json.dumps(quiet))
    await hass.async_block_till_done()
    for object_id in ("latency_p95", "within_target", "exit_rate_stage_1", "last_result", "confidence"):
        assert _state(hass, "sensor", f"distree_home_{object_id}") == STATE_UNKNOWN, object_id

    # controls publish on the orchestrator's control/set topics
    await hass.services.async_call(
        "number",
        "set_value",
        {"entity_id": _entity_id(hass, "number", "distree_home_latency_target"), "value": 400},
        blocking=True,
    )
    mqtt_mock.async_publish.assert_called_once_with(
        "distree/home/control/set/latency_target_ms", "400", 0, False
    )
    mqtt_mock.async_publish.reset_mock()
    await hass.services.async_call(
        "select",
        "select_option",
        {"entity_id": _entity_id(hass, "select", "distree_home_policy_mode"), "option": "no-exit"},
        blocking=True,
    )
    mqtt_mock.async_publish.assert_called_once_with("distree/home/control/set/mode", "no-exit", 0, False)

    for payload in ("offline", "stopped"):
        async_fire_mqtt_message(hass, "distree/home/status/orchestrator", payload)
        await hass.async_block_till_done()
        for platform, object_id in unique_ids:
            assert _state(hass, platform, f"distree_home_{object_id}") == STATE_UNAVAILABLE, (
                payload,
                object_id,
            )


async def test_removal_deletes_the_entities(hass: HomeAssistant, mqtt_mock_entry) -> None:
    await mqtt_mock_entry()
    discovery = pipeline_discovery(TOPICS, 2)
    _announce(hass, discovery)
    await hass.async_block_till_done()
    assert er.async_get(hass).async_get_entity_id("sensor", "mqtt", "distree_home_confidence")
    for topic in discovery.all_topics("homeassistant"):
        async_fire_mqtt_message(hass, topic, "")
    await hass.async_block_till_done()
    assert er.async_get(hass).async_get_entity_id("sensor", "mqtt", "distree_home_confidence") is None
    assert dr.async_get(hass).async_get_device(identifiers={("mqtt", "distree_home")}) is None


async def test_edge_device_connectivity_queue_delay_and_compute_time(
    hass: HomeAssistant, mqtt_mock_entry
) -> None:
    await mqtt_mock_entry()
    _announce(hass, pipeline_discovery(TOPICS, 3))
    _announce(hass, edge_device_discovery(TOPICS, "gw-1", 1, num_stages=3))
    await hass.async_block_till_done()
    devices = dr.async_get(hass)
    device = devices.async_get_device(identifiers={("mqtt", "distree_home_gw-1")})
    pipeline = devices.async_get_device(identifiers={("mqtt", "distree_home")})
    assert device is not None and pipeline is not None and device.via_device_id == pipeline.id
    assert _state(hass, "binary_sensor", "distree_home_gw-1_connectivity") == STATE_UNAVAILABLE

    async_fire_mqtt_message(hass, "distree/home/status/gw-1", "online")
    telemetry = {"device": "gw-1", "stage_index": 1, "queue_delay_p95_ms": 12.5, "compute_p50_ms": 31.25}
    async_fire_mqtt_message(hass, "distree/home/telemetry/gw-1", json.dumps(telemetry))
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor", "distree_home_gw-1_connectivity") == STATE_ON
    assert float(_state(hass, "sensor", "distree_home_gw-1_queue_delay")) == pytest.approx(12.5)
    assert float(_state(hass, "sensor", "distree_home_gw-1_compute_time")) == pytest.approx(31.25)

    async_fire_mqtt_message(hass, "distree/home/status/gw-1", "offline")
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor", "distree_home_gw-1_connectivity") == STATE_OFF
    assert _state(hass, "sensor", "distree_home_gw-1_queue_delay") == STATE_UNAVAILABLE


async def test_camera_event_image_and_class_sensors(hass: HomeAssistant, mqtt_mock_entry, freezer) -> None:
    await mqtt_mock_entry()
    _announce(hass, camera_discovery(TOPICS, "front door", ["person", "cat"], off_delay_s=15))
    await hass.async_block_till_done()
    async_fire_mqtt_message(hass, "distree/home/status/front%20door", "online")
    await hass.async_block_till_done()

    event_id = _entity_id(hass, "event", "distree_home_camera_front_door_detection")
    assert hass.states.get(event_id).state == STATE_UNKNOWN
    event = {
        "type": "new",
        "id": "e1",
        "camera": "front door",
        "class_name": "person",
        "label": 0,
        "confidence": 0.88,
        "start_time": 1700000000.0,
        "end_time": None,
    }
    async_fire_mqtt_message(hass, "distree/home/camera/front%20door/events", json.dumps(event))
    await hass.async_block_till_done()
    fired = hass.states.get(event_id)
    assert fired.state != STATE_UNKNOWN
    assert fired.attributes["event_type"] == "new"
    assert fired.attributes["class_name"] == "person" and fired.attributes["confidence"] == 0.88

    image_id = _entity_id(hass, "image", "distree_home_camera_front_door_snapshot")
    snapshot = jpeg_bytes()
    async_fire_mqtt_message(hass, "distree/home/camera/front%20door/snapshot", snapshot)
    await hass.async_block_till_done()
    assert hass.states.get(image_id).state != STATE_UNKNOWN
    image_entity = hass.data[IMAGE_COMPONENT].get_entity(image_id)
    assert image_entity is not None and await image_entity.async_image() == snapshot
    assert image_entity.content_type == "image/jpeg"

    state = {
        "label": 0,
        "class_name": "person",
        "confidence": 0.88,
        "exit_stage": 0,
        "request_id": "r",
        "at": 1.0,
        "degraded": False,
    }
    async_fire_mqtt_message(hass, "distree/home/camera/front%20door/state", json.dumps(state))
    person = "distree_home_camera_front_door_detected_person"
    async_fire_mqtt_message(hass, "distree/home/camera/front%20door/detected/person", "ON")
    await hass.async_block_till_done()
    assert _state(hass, "sensor", "distree_home_camera_front_door_last_detection") == "person"
    assert _state(hass, "binary_sensor", person) == STATE_ON
    assert _state(hass, "binary_sensor", "distree_home_camera_front_door_detected_cat") == STATE_UNKNOWN
    freezer.tick(timedelta(seconds=16))  # off_delay: no new ON for 15 s
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert _state(hass, "binary_sensor", person) == STATE_OFF

    async_fire_mqtt_message(hass, "distree/home/status/front%20door", "offline")
    await hass.async_block_till_done()
    assert hass.states.get(event_id).state == STATE_UNAVAILABLE
    assert _state(hass, "binary_sensor", person) == STATE_UNAVAILABLE
