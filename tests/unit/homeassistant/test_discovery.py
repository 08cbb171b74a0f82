"""Discovery payloads: shape of both formats, unique ids, availability, removal topics."""

from __future__ import annotations

import json

import pytest

from distree_mqtt.homeassistant.discovery import (
    ABBREVIATIONS,
    Availability,
    DeviceDiscovery,
    Sensor,
    discovery_id,
)
from distree_mqtt.homeassistant.entities import (
    ORCHESTRATOR_ID,
    camera_discovery,
    edge_device_discovery,
    pipeline_discovery,
)
from distree_mqtt.homeassistant.settings import HomeAssistantSettings
from distree_mqtt.orchestrator import service as orchestrator_service
from distree_mqtt.topics import Topics

TOPICS = Topics(pipeline="home")


def _all() -> list[DeviceDiscovery]:
    return [
        pipeline_discovery(TOPICS, 3, model_id="mnist"),
        edge_device_discovery(TOPICS, "gw-1", 0, num_stages=3),
        edge_device_discovery(TOPICS, "gw-2", 1, num_stages=3),
        camera_discovery(TOPICS, "front door", ["person", "cat"], off_delay_s=15),
    ]


def test_device_based_payload_has_device_origin_components_and_availability() -> None:
    discovery = pipeline_discovery(
        TOPICS, 3, origin=HomeAssistantSettings(support_url="https://x.test").origin()
    )
    [(topic, raw)] = discovery.messages("homeassistant")
    payload = json.loads(raw)
    assert topic == "homeassistant/device/distree_home/config"
    assert payload["dev"]["ids"] == ["distree_home"] and payload["dev"]["name"] == "distree home"
    assert payload["o"] == {"name": "distree-mqtt", "sw": "0.1.0", "url": "https://x.test"}
    assert payload["avty"] == [
        {
            "t": "distree/home/status/orchestrator",
            "val_tpl": "{{ 'online' if value == 'online' else 'offline' }}",
            "pl_avail": "online",
            "pl_not_avail": "offline",
        }
    ]
    components = payload["cmps"]
    expected = {
        "last_result",
        "confidence",
        "exit_stage",
        "latency_p95",
        "within_target",
        "requests_per_second",
        "exit_rate_stage_0",
        "exit_rate_stage_1",
        "exit_rate_stage_2",
        "latency_target",
        "policy_mode",
    }
    assert set(components) == expected
    assert components["latency_target"]["p"] == "number"
    assert components["latency_target"]["cmd_t"] == "distree/home/control/set/latency_target_ms"
    assert components["policy_mode"]["ops"] == ["adaptive", "static", "no-exit"]
    assert components["policy_mode"]["cmd_t"] == "distree/home/control/set/mode"
    assert all(c["stat_t"].startswith("distree/home/") for c in components.values())


def test_full_keys_are_the_abbreviations_spelled_out() -> None:
    discovery = pipeline_discovery(TOPICS, 2)
    short = discovery.device_payload(abbreviate=True)
    full = discovery.device_payload(abbreviate=False)
    assert set(full) == {"device", "origin", "components", "availability"}
    assert full["components"]["latency_target"]["command_topic"] == short["cmps"]["latency_target"]["cmd_t"]
    assert full["device"]["identifiers"] == short["dev"]["ids"]
    used = {key for component in full["components"].values() for key in component}
    assert used <= set(ABBREVIATIONS) | {"name", "min", "max", "step", "mode"}


def test_legacy_format_has_one_self_contained_config_per_entity() -> None:
    discovery = camera_discovery(TOPICS, "front door", ["person", "cat"], off_delay_s=15)
    messages = dict(discovery.messages("ha", legacy=True))
    assert set(messages) == {
        "ha/event/distree_home_camera_front_door/detection/config",
        "ha/image/distree_home_camera_front_door/snapshot/config",
        "ha/sensor/distree_home_camera_front_door/last_detection/config",
        "ha/binary_sensor/distree_home_camera_front_door/detected_person/config",
        "ha/binary_sensor/distree_home_camera_front_door/detected_cat/config",
    }
    person = json.loads(messages["ha/binary_sensor/distree_home_camera_front_door/detected_person/config"])
    assert "p" not in person  # the topic names the platform
    assert person["dev"]["via_device"] == "distree_home"
    assert person["o"]["name"] == "distree-mqtt"
    assert person["stat_t"] == "distree/home/camera/front%20door/detected/person"
    assert person["off_dly"] == 15 and person["pl_on"] == "ON" and person["pl_off"] == "OFF"
    assert person["avty"][0]["t"] == "distree/home/status/front%20door"
    event = json.loads(messages["ha/event/distree_home_camera_front_door/detection/config"])
    assert event["evt_typ"] == ["new", "update", "end"]
    assert event["stat_t"] == "distree/home/camera/front%20door/events"
    image = json.loads(messages["ha/image/distree_home_camera_front_door/snapshot/config"])
    assert image["img_t"] == "distree/home/camera/front%20door/snapshot"
    assert image["cont_type"] == "image/jpeg"


def test_unique_ids_are_unique_across_pipeline_devices_and_cameras() -> None:
    unique_ids = [component.unique_id for discovery in _all() for component in discovery.components]
    assert len(unique_ids) == len(set(unique_ids))
    other = pipeline_discovery(Topics(pipeline="garage"), 3)
    assert not {c.unique_id for c in other.components} & set(unique_ids)


def test_every_entity_has_a_device_and_availability_on_a_status_topic() -> None:
    for discovery in _all():
        assert discovery.device.identifiers == (discovery.node_id,)
        for _, raw in discovery.messages("homeassistant", legacy=True):
            payload = json.loads(raw)
            assert payload["dev"]["ids"] == [discovery.node_id]
            assert payload["avty"] and all("/status/" in entry["t"] for entry in payload["avty"])


def test_device_connectivity_is_available_whenever_any_status_is_known() -> None:
    discovery = edge_device_discovery(TOPICS, "gw-1", 0)
    components = discovery.device_payload()["cmps"]
    connectivity = components["connectivity"]
    assert connectivity["dev_cla"] == "connectivity"
    assert connectivity["stat_t"] == "distree/home/status/gw-1"
    assert "offline" in connectivity["avty"][0]["val_tpl"]
    assert components["queue_delay"]["stat_t"] == "distree/home/telemetry/gw-1"
    assert components["queue_delay"]["val_tpl"] == "{{ value_json.queue_delay_p95_ms }}"
    assert components["compute_time"]["val_tpl"] == "{{ value_json.compute_p50_ms }}"


def test_removal_covers_both_formats() -> None:
    discovery = camera_discovery(TOPICS, "cam", ["person"])
    topics = discovery.all_topics("homeassistant")
    assert "homeassistant/device/distree_home_camera_cam/config" in topics
    assert {topic for topic, _ in discovery.messages("homeassistant", legacy=True)} <= set(topics)
    assert len(topics) == 1 + len(discovery.components)


def test_ids_are_safe_topic_levels_and_duplicates_are_refused() -> None:
    assert discovery_id("distree", "front door/#+") == "distree_front_door"
    assert discovery_id("", "") == "distree"
    sensor = Sensor(object_id="a", name="A", unique_id="u", state_topic="t")
    with pytest.raises(ValueError, match="duplicate object id"):
        DeviceDiscovery("n", pipeline_discovery(TOPICS, 1).device, (sensor, sensor))
    # class names that only differ in unsafe characters still get distinct entities
    camera = camera_discovery(TOPICS, "cam", ["a b", "a/b"])
    assert len({c.object_id for c in camera.components}) == len(camera.components)


def test_entities_and_orchestrator_agree_on_the_orchestrator_status_level() -> None:
    assert ORCHESTRATOR_ID == orchestrator_service.ORCHESTRATOR_ID
    assert Availability(TOPICS.status(ORCHESTRATOR_ID)).topic == "distree/home/status/orchestrator"


def test_settings_reject_unknown_keys_and_bad_prefixes() -> None:
    with pytest.raises(ValueError):
        HomeAssistantSettings(discovery_prefix="home/+")
    with pytest.raises(ValueError):
        HomeAssistantSettings.model_validate({"unknown": 1})
    for name, field in HomeAssistantSettings.model_fields.items():
        assert field.title and field.description, name
