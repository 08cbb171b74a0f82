"""Settings of the Home Assistant discovery: the `homeassistant` section of DistreeSettings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from distree_mqtt.homeassistant.discovery import Origin


class HomeAssistantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        title="Publish MQTT discovery",
        description="The orchestrator announces the pipeline and every edge device it sees; a camera "
        "service announces itself. Nothing else changes when Home Assistant is absent.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        title="Discovery prefix",
        description="Home Assistant's MQTT discovery prefix; its birth message is read on <prefix>/status.",
    )
    node_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        title="Node id",
        description="Discovery node id of the pipeline (default: <topic prefix>_<pipeline>); edge "
        "devices and cameras use it as the start of theirs, so it keeps unique ids unique.",
    )
    device_name: str | None = Field(
        None,
        max_length=100,
        title="Device name",
        description="Name of the pipeline's device in Home Assistant (default: distree <pipeline>).",
    )
    legacy_discovery: bool = Field(
        False,
        title="Per-component discovery",
        description="Publish one config per entity on <prefix>/<component>/<node>/<object>/config, "
        "for Home Assistant older than 2024.11, instead of one device-based config per device.",
    )
    off_delay_s: int = Field(
        30,
        ge=0,
        le=86_400,
        title="Class sensor off delay (s)",
        description="A camera's per-class binary sensors turn off this long after the last ON "
        "(0: only when the camera publishes OFF).",
    )
    support_url: str | None = Field(
        None,
        max_length=256,
        pattern=r"^https?://",
        title="Support URL",
        description="Shown as the origin's support link in Home Assistant's MQTT device info.",
    )

    def origin(self) -> Origin:
        return Origin(support_url=self.support_url)
