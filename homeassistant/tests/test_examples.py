"""The blueprint is valid for Home Assistant and the example dashboard names real entities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeassistant.components.automation.config import async_validate_config_item
from homeassistant.components.blueprint.models import Blueprint, BlueprintInputs
from homeassistant.components.blueprint.schemas import BLUEPRINT_SCHEMA
from homeassistant.core import HomeAssistant
from homeassistant.util.yaml import load_yaml_dict
from pytest_homeassistant_custom_component.common import async_fire_mqtt_message

from distree_mqtt.homeassistant.entities import camera_discovery, edge_device_discovery, pipeline_discovery
from distree_mqtt.topics import Topics

HERE = Path(__file__).parents[1]


async def test_blueprint_is_a_valid_automation_blueprint(hass: HomeAssistant) -> None:
    blueprint = Blueprint(
        load_yaml_dict(str(HERE / "blueprints/automation/distree/notify_on_detection.yaml")),
        expected_domain="automation",
        schema=BLUEPRINT_SCHEMA,
    )
    assert set(blueprint.inputs) == {
        "trigger_entity",
        "class_name",
        "snapshot_entity",
        "notify_action",
        "cooldown",
    }
    inputs = {
        "trigger_entity": "event.distree_default_camera_doorway_detection",
        "snapshot_entity": "image.distree_default_camera_doorway_snapshot",
    }
    automation = BlueprintInputs(
        blueprint, {"use_blueprint": {"path": "distree/notify_on_detection.yaml", "input": inputs}}
    ).async_substitute()
    assert await async_validate_config_item(hass, "distree", automation) is not None


def _entities(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("entity", "entity_id") and isinstance(value, str):
                found.add(value)
            else:
                found |= _entities(value)
    elif isinstance(node, list):
        for item in node:
            found |= _entities(item)
    return found


async def test_dashboard_entities_are_the_ones_discovery_creates(
    hass: HomeAssistant, mqtt_mock_entry
) -> None:
    await mqtt_mock_entry()
    topics = Topics()
    for discovery in (
        pipeline_discovery(topics, 3),
        edge_device_discovery(topics, "gateway-stage0", 0, num_stages=3),
        camera_discovery(topics, "doorway", ["person"]),
    ):
        for topic, payload in discovery.messages("homeassistant"):
            async_fire_mqtt_message(hass, topic, payload, retain=True)
    await hass.async_block_till_done()
    wanted = _entities(load_yaml_dict(str(HERE / "dashboards/distree.yaml")))
    assert len(wanted) > 10
    assert sorted(entity for entity in wanted if hass.states.get(entity) is None) == []
