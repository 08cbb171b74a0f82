"""Publishing, re-publishing on Home Assistant's birth message, and removal over a fake transport."""

from __future__ import annotations

import json

from distree_mqtt.homeassistant.entities import camera_discovery, pipeline_discovery
from distree_mqtt.homeassistant.publisher import DiscoveryPublisher, publish_discovery
from distree_mqtt.topics import Topics
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="home")


def test_publish_is_retained_and_republished_when_home_assistant_comes_online() -> None:
    transport = MemoryTransport()
    publisher = DiscoveryPublisher(transport, "homeassistant")
    publisher.start()
    publisher.publish(pipeline_discovery(TOPICS, 3))
    publisher.publish(pipeline_discovery(TOPICS, 3))  # unchanged: not sent again
    topic = "homeassistant/device/distree_home/config"
    assert [(t, retain) for t, _, retain in transport.published] == [(topic, True)]
    transport.deliver("homeassistant/status", "offline")
    assert len(transport.on(topic)) == 1
    transport.deliver("homeassistant/status", "online")
    assert len(transport.on(topic)) == 2 and publisher.republished == 1
    assert json.loads(transport.retained[topic])["dev"]["ids"] == ["distree_home"]


def test_removal_clears_every_config_in_both_formats() -> None:
    transport = MemoryTransport()
    publisher = DiscoveryPublisher(transport, "ha", legacy=True)
    pipeline = pipeline_discovery(TOPICS, 2)
    camera = camera_discovery(TOPICS, "cam", ["person"])
    publisher.publish(pipeline)
    publisher.publish(camera)
    legacy_topics = {topic for topic, payload in transport.retained.items() if payload}
    assert len(legacy_topics) == len(pipeline.components) + len(camera.components)
    publisher.remove_all()
    assert all(transport.retained[topic] == b"" for topic in legacy_topics)
    assert transport.retained["ha/device/distree_home/config"] == b""
    assert transport.retained["ha/device/distree_home_camera_cam/config"] == b""
    assert publisher.devices == {}
    transport.deliver("ha/status", "online")  # nothing left to re-announce
    assert not any(payload for payload in transport.retained.values())


def test_withdraw_removes_one_device_only() -> None:
    transport = MemoryTransport()
    publisher = DiscoveryPublisher(transport)
    publisher.publish(pipeline_discovery(TOPICS, 2))
    camera = camera_discovery(TOPICS, "cam", [])
    publisher.publish(camera)
    publisher.withdraw(camera.node_id)
    assert transport.retained["homeassistant/device/distree_home_camera_cam/config"] == b""
    assert transport.retained["homeassistant/device/distree_home/config"] != b""


def test_publish_discovery_function_for_one_shot_callers() -> None:
    transport = MemoryTransport()
    written = publish_discovery(transport, camera_discovery(TOPICS, "cam", ["cat"]), "ha", legacy=True)
    assert sorted(written) == sorted(transport.retained)
    assert "ha/binary_sensor/distree_home_camera_cam/detected_cat/config" in written
