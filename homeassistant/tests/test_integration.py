"""The custom integration: config flow and the `distree.classify` action, in real Home Assistant."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from typing import Any

import pytest
from homeassistant import config_entries
from homeassistant.components.camera import Camera
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockPlatform,
    async_capture_events,
    async_fire_mqtt_message,
    mock_platform,
)

from custom_components.distree import pipeline as pipeline_module
from custom_components.distree.const import DOMAIN

from .conftest import jpeg_bytes

MODEL_HASH = "ab" * 32
IMAGE = jpeg_bytes(12, 8)
ENTRY_DATA = {"pipeline": "home", "topic_prefix": "distree", "deadline_ms": 1500}


class StillCamera(Camera):
    """A camera that always shows the same JPEG."""

    _attr_name = "Doorway"
    _attr_unique_id = "doorway"

    async def async_camera_image(self, width: int | None = None, height: int | None = None) -> bytes:
        return IMAGE


async def test_config_flow_creates_one_entry_per_pipeline(hass: HomeAssistant, mqtt_mock_entry) -> None:
    await mqtt_mock_entry()
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    assert result["type"] is FlowResultType.FORM and result["step_id"] == "user"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"pipeline": "a/b", "topic_prefix": "distree", "deadline_ms": 1500}
    )
    assert result["type"] is FlowResultType.FORM and result["errors"] == {"pipeline": "invalid_pipeline"}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], ENTRY_DATA)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "distree home" and result["data"] == ENTRY_DATA
    await hass.async_block_till_done()
    [entry] = hass.config_entries.async_entries(DOMAIN)
    assert entry.state is config_entries.ConfigEntryState.LOADED and entry.unique_id == "distree/home"

    again = await hass.config_entries.flow.async_init(DOMAIN, context={"source": config_entries.SOURCE_USER})
    again = await hass.config_entries.flow.async_configure(again["flow_id"], ENTRY_DATA)
    assert again["type"] is FlowResultType.ABORT and again["reason"] == "already_configured"


@pytest.fixture
async def classify_ready(hass: HomeAssistant, mqtt_mock_entry):
    """MQTT, a camera, the integration, and a stage-0 device announced on the broker."""
    mqtt_mock = await mqtt_mock_entry()

    async def setup_platform(hass, config, async_add_entities, discovery_info=None) -> None:
        async_add_entities([StillCamera()])

    mock_platform(hass, "test.camera", MockPlatform(async_setup_platform=setup_platform))
    assert await async_setup_component(hass, "camera", {"camera": {"platform": "test"}})
    entry = MockConfigEntry(domain=DOMAIN, data=ENTRY_DATA, unique_id="distree/home")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    descriptor = {
        "device": "gw0",
        "stage_index": 0,
        "num_stages": 3,
        "model_id": "m",
        "model_hash": MODEL_HASH,
    }
    async_fire_mqtt_message(hass, "distree/home/devices/gw0", json.dumps(descriptor), retain=True)
    async_fire_mqtt_message(hass, "distree/home/status/gw0", "online", retain=True)
    await hass.async_block_till_done()
    mqtt_mock.async_publish.reset_mock()
    return mqtt_mock


def _decode(envelope: bytes) -> tuple[dict[str, Any], bytes]:
    magic, version, header_length = struct.unpack(">4sBI", envelope[:9])
    assert (magic, version) == (b"DTRE", 1)
    return json.loads(envelope[9 : 9 + header_length]), envelope[9 + header_length :]


async def _published_request(mqtt_mock) -> bytes:
    for _ in range(200):
        for call in mqtt_mock.async_publish.call_args_list:
            if call.args[0] == "distree/home/stage/0/in":
                return call.args[1]
        await asyncio.sleep(0.01)
    raise AssertionError("no request was published on stage/0/in")


async def test_classify_sends_an_envelope_and_returns_the_result(hass: HomeAssistant, classify_ready) -> None:
    events = async_capture_events(hass, "distree_result")
    call = hass.async_create_task(
        hass.services.async_call(
            DOMAIN,
            "classify",
            {"camera": "camera.doorway", "deadline_ms": 800},
            blocking=True,
            return_response=True,
        )
    )
    envelope = await _published_request(classify_ready)
    header, payload = _decode(envelope)
    assert payload == IMAGE
    assert header["model_hash"] == MODEL_HASH and header["stage_index"] == 0
    assert header["source"] == "homeassistant"
    assert header["deadline"] - header["created_at"] == pytest.approx(0.8)
    assert header["reply_to"].startswith("distree/home/reply/")
    assert header["tensor"] == {
        "kind": "image",
        "codec": "jpeg",
        "dtype": "uint8",
        "shape": [8, 12],
        "payload_bytes": len(IMAGE),
        "crc32": zlib.crc32(IMAGE),
    }
    result = {
        "request_id": header["request_id"],
        "source": "homeassistant",
        "outcome": "result",
        "label": 3,
        "class_name": "cat",
        "confidence": 0.93,
        "exit_stage": 0,
        "latency_ms": 41.0,
    }
    async_fire_mqtt_message(hass, header["reply_to"], json.dumps({**result, "request_id": "someone-else"}))
    async_fire_mqtt_message(hass, header["reply_to"], json.dumps(result))
    response = await call
    assert response["class_name"] == "cat" and response["camera"] == "camera.doorway"
    assert response["pipeline"] == "distree/home"
    await hass.async_block_till_done()
    assert len(events) == 1 and events[0].data["class_name"] == "cat"
    assert events[0].data["camera"] == "camera.doorway"


async def test_classify_times_out_with_a_clear_error(
    hass: HomeAssistant, classify_ready, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "GRACE_MS", 0)
    events = async_capture_events(hass, "distree_result")
    with pytest.raises(HomeAssistantError, match="no result from pipeline distree/home within 50 ms"):
        await hass.services.async_call(
            DOMAIN,
            "classify",
            {"camera": "camera.doorway", "deadline_ms": 50},
            blocking=True,
            return_response=True,
        )
    assert events == []


async def test_classify_without_a_stage_zero_device_says_so(hass: HomeAssistant, classify_ready) -> None:
    async_fire_mqtt_message(hass, "distree/home/devices/gw0", "")  # the device stopped cleanly
    await hass.async_block_till_done()
    with pytest.raises(HomeAssistantError, match="no stage-0 device"):
        await hass.services.async_call(DOMAIN, "classify", {"camera": "camera.doorway"}, blocking=True)
    classify_ready.async_publish.assert_not_called()


async def test_a_rejected_request_raises_and_is_still_reported(hass: HomeAssistant, classify_ready) -> None:
    events = async_capture_events(hass, "distree_result")
    call = hass.async_create_task(
        hass.services.async_call(DOMAIN, "classify", {"camera": "camera.doorway"}, blocking=True)
    )
    header, _ = _decode(await _published_request(classify_ready))
    rejected = {
        "request_id": header["request_id"],
        "source": "homeassistant",
        "outcome": "rejected",
        "reason": "queue full",
    }
    async_fire_mqtt_message(hass, header["reply_to"], json.dumps(rejected))
    with pytest.raises(HomeAssistantError, match="rejected the image: queue full"):
        await call
    assert [event.data["outcome"] for event in events] == ["rejected"]
