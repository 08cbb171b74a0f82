"""distree-mqtt for Home Assistant: the `distree.classify` action.

Entities come from MQTT discovery published by the orchestrator and camera services; this
integration adds what discovery cannot: classifying any Home Assistant camera's current image
through the pipeline, on demand, from an automation or a script.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.components import mqtt
from homeassistant.components.camera import async_get_image
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import ConfigEntryNotReady, HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.typing import ConfigType

from .const import (
    ATTR_CAMERA,
    ATTR_CONFIG_ENTRY_ID,
    ATTR_DEADLINE_MS,
    CONF_DEADLINE_MS,
    CONF_PIPELINE,
    CONF_TOPIC_PREFIX,
    DOMAIN,
    EVENT_RESULT,
    SERVICE_CLASSIFY,
)
from .pipeline import DistreePipeline

type DistreeConfigEntry = ConfigEntry[DistreePipeline]

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)
CLASSIFY_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_CAMERA): cv.entity_domain("camera"),
        vol.Optional(ATTR_DEADLINE_MS): vol.All(vol.Coerce(int), vol.Range(min=10, max=600_000)),
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
    }
)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register the action once, whatever number of pipelines is configured."""

    async def classify(call: ServiceCall) -> ServiceResponse:
        pipeline = _pipeline_for(hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
        camera = call.data[ATTR_CAMERA]
        image = await async_get_image(hass, camera)
        result: dict[str, Any] = await pipeline.async_classify(image.content, call.data.get(ATTR_DEADLINE_MS))
        data = {"camera": camera, "pipeline": pipeline.root, **result}
        hass.bus.async_fire(EVENT_RESULT, data)
        if result.get("outcome") == "rejected":
            raise HomeAssistantError(f"the pipeline rejected the image: {result.get('reason')}")
        return data if call.return_response else None

    hass.services.async_register(
        DOMAIN,
        SERVICE_CLASSIFY,
        classify,
        schema=CLASSIFY_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    return True


def _pipeline_for(hass: HomeAssistant, entry_id: str | None) -> DistreePipeline:
    entries: list[DistreeConfigEntry] = [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.state is ConfigEntryState.LOADED and (entry_id is None or entry.entry_id == entry_id)
    ]
    if not entries:
        raise ServiceValidationError("no loaded distree pipeline" + (f" {entry_id}" if entry_id else ""))
    if len(entries) > 1:
        raise ServiceValidationError("several distree pipelines are configured: name one by config_entry_id")
    return entries[0].runtime_data


async def async_setup_entry(hass: HomeAssistant, entry: DistreeConfigEntry) -> bool:
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady("MQTT is not available")
    pipeline = DistreePipeline(
        hass, entry.data[CONF_TOPIC_PREFIX], entry.data[CONF_PIPELINE], entry.data[CONF_DEADLINE_MS]
    )
    await pipeline.async_start()
    entry.runtime_data = pipeline
    entry.async_on_unload(pipeline.async_stop)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: DistreeConfigEntry) -> bool:
    return True
