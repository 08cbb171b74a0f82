"""Home Assistant MQTT discovery payloads as typed models that serialise themselves.

Two formats, one model:

* device-based (Home Assistant 2024.11+): one retained message per device on
  `<prefix>/device/<node_id>/config` holding `dev`, `o` (origin), `cmps` (the components) and
  the availability every component shares;
* per-component (older Home Assistant): one retained message per entity on
  `<prefix>/<component>/<node_id>/<object_id>/config`, each repeating device, origin and
  availability.

Keys come out abbreviated (`stat_t`, `uniq_id`, ...) or in full; Home Assistant reads both.
This module imports nothing beyond the standard library and `distree_mqtt.topics`, so the
Home Assistant test environment (no torch) can import it and feed Home Assistant the payloads
the services really publish.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from distree_mqtt import __version__

ORIGIN_NAME = "distree-mqtt"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"

# Full key -> Home Assistant's abbreviation, for every key these models emit (checked against
# Home Assistant's own table by homeassistant/tests/test_discovery_payloads.py).
ABBREVIATIONS: dict[str, str] = {
    "availability": "avty",
    "availability_mode": "avty_mode",
    "command_template": "cmd_tpl",
    "command_topic": "cmd_t",
    "components": "cmps",
    "content_type": "cont_type",
    "device": "dev",
    "device_class": "dev_cla",
    "enabled_by_default": "en",
    "entity_category": "ent_cat",
    "event_types": "evt_typ",
    "icon": "ic",
    "image_topic": "img_t",
    "json_attributes_template": "json_attr_tpl",
    "json_attributes_topic": "json_attr_t",
    "off_delay": "off_dly",
    "options": "ops",
    "origin": "o",
    "payload_available": "pl_avail",
    "payload_not_available": "pl_not_avail",
    "payload_off": "pl_off",
    "payload_on": "pl_on",
    "platform": "p",
    "state_class": "stat_cla",
    "state_topic": "stat_t",
    "suggested_display_precision": "sug_dsp_prc",
    "topic": "t",
    "unique_id": "uniq_id",
    "unit_of_measurement": "unit_of_meas",
    "value_template": "val_tpl",
}
DEVICE_ABBREVIATIONS: dict[str, str] = {
    "configuration_url": "cu",
    "identifiers": "ids",
    "manufacturer": "mf",
    "model": "mdl",
    "name": "name",
    "sw_version": "sw",
    "via_device": "via_device",
}
ORIGIN_ABBREVIATIONS: dict[str, str] = {"name": "name", "sw_version": "sw", "support_url": "url"}

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def discovery_id(*parts: str) -> str:
    """A node or object id Home Assistant accepts in a discovery topic: [A-Za-z0-9_-] only."""
    joined = "_".join(_ID_UNSAFE.sub("_", part).strip("_") for part in parts if part)
    return joined or "distree"


def _serialise(values: Mapping[str, Any], table: Mapping[str, str], abbreviate: bool) -> dict[str, Any]:
    """Drop unset values and, when asked, abbreviate keys."""
    return {
        (table.get(key, key) if abbreviate else key): value
        for key, value in values.items()
        if value is not None and value != () and value != []
    }


def _values(model: Any) -> dict[str, Any]:
    return {item.name: getattr(model, item.name) for item in fields(model)}


@dataclass(frozen=True)
class Availability:
    """One status topic. Our services publish online / offline (Last Will) / stopped; the
    template folds `stopped` and anything unexpected into `offline`."""

    topic: str
    value_template: str | None = "{{ 'online' if value == 'online' else 'offline' }}"
    payload_available: str = "online"
    payload_not_available: str = "offline"

    def to_payload(self, abbreviate: bool) -> dict[str, Any]:
        return _serialise(_values(self), ABBREVIATIONS, abbreviate)


@dataclass(frozen=True)
class Device:
    """The Home Assistant device the entities belong to."""

    identifiers: tuple[str, ...]
    name: str
    manufacturer: str = "distree-mqtt"
    model: str | None = None
    sw_version: str | None = __version__
    via_device: str | None = None
    configuration_url: str | None = None

    def to_payload(self, abbreviate: bool) -> dict[str, Any]:
        values = _values(self)
        values["identifiers"] = list(self.identifiers)
        return _serialise(values, DEVICE_ABBREVIATIONS, abbreviate)


@dataclass(frozen=True)
class Origin:
    """Who published the discovery message (shown in Home Assistant's MQTT info)."""

    name: str = ORIGIN_NAME
    sw_version: str | None = __version__
    support_url: str | None = None

    def to_payload(self, abbreviate: bool) -> dict[str, Any]:
        return _serialise(_values(self), ORIGIN_ABBREVIATIONS, abbreviate)


@dataclass(frozen=True)
class Component:
    """Options shared by every entity; subclasses add their platform's options."""

    platform = "sensor"

    object_id: str
    name: str
    unique_id: str
    icon: str | None = None
    entity_category: str | None = None
    enabled_by_default: bool | None = None
    json_attributes_topic: str | None = None
    json_attributes_template: str | None = None
    availability: tuple[Availability, ...] = field(
        default=(), metadata={"doc": "Overrides the device's shared availability for this entity"}
    )

    def options(self) -> dict[str, Any]:
        return _values(self)

    def to_payload(self, abbreviate: bool) -> dict[str, Any]:
        values = {"platform": self.platform, **self.options()}
        # The object id names the component (cmps key, topic level); sent as `object_id` it would
        # also become the entity id, and two pipelines' "last_result" would collide there.
        del values["object_id"]
        values["availability"] = [entry.to_payload(abbreviate) for entry in self.availability]
        return _serialise(values, ABBREVIATIONS, abbreviate)


@dataclass(frozen=True)
class Sensor(Component):
    platform = "sensor"

    state_topic: str = ""
    value_template: str | None = None
    unit_of_measurement: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    suggested_display_precision: int | None = None


@dataclass(frozen=True)
class BinarySensor(Component):
    platform = "binary_sensor"

    state_topic: str = ""
    value_template: str | None = None
    device_class: str | None = None
    payload_on: str = "ON"
    payload_off: str = "OFF"
    off_delay: int | None = None


@dataclass(frozen=True)
class Number(Component):
    platform = "number"

    command_topic: str = ""
    state_topic: str | None = None
    value_template: str | None = None
    command_template: str | None = None
    min: float = 0.0
    max: float = 100.0
    step: float = 1.0
    mode: str = "box"
    unit_of_measurement: str | None = None
    device_class: str | None = None


@dataclass(frozen=True)
class Select(Component):
    platform = "select"

    command_topic: str = ""
    options_list: tuple[str, ...] = ()
    state_topic: str | None = None
    value_template: str | None = None

    def options(self) -> dict[str, Any]:
        values = _values(self)
        values["options"] = list(values.pop("options_list"))
        return values


@dataclass(frozen=True)
class Event(Component):
    platform = "event"

    state_topic: str = ""
    event_types: tuple[str, ...] = ()
    value_template: str | None = None
    device_class: str | None = None

    def options(self) -> dict[str, Any]:
        values = _values(self)
        values["event_types"] = list(self.event_types)
        return values


@dataclass(frozen=True)
class Image(Component):
    platform = "image"

    image_topic: str = ""
    content_type: str = "image/jpeg"


@dataclass(frozen=True)
class DeviceDiscovery:
    """Everything Home Assistant needs to know about one device and its entities."""

    node_id: str
    device: Device
    components: tuple[Component, ...]
    availability: tuple[Availability, ...] = ()
    origin: Origin = field(default_factory=Origin)
    availability_mode: str | None = None

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for component in self.components:
            if component.object_id in seen:
                raise ValueError(f"duplicate object id {component.object_id!r} in {self.node_id!r}")
            seen.add(component.object_id)

    # -- device-based ------------------------------------------------------------------------
    def device_topic(self, prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
        return f"{prefix}/device/{self.node_id}/config"

    def device_payload(self, abbreviate: bool = True) -> dict[str, Any]:
        key = ABBREVIATIONS if abbreviate else {}
        payload: dict[str, Any] = {
            key.get("device", "device"): self.device.to_payload(abbreviate),
            key.get("origin", "origin"): self.origin.to_payload(abbreviate),
            key.get("components", "components"): {
                component.object_id: component.to_payload(abbreviate) for component in self.components
            },
        }
        payload.update(self._shared(abbreviate))
        return payload

    # -- per component (legacy) --------------------------------------------------------------
    def component_topic(self, component: Component, prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
        return f"{prefix}/{component.platform}/{self.node_id}/{component.object_id}/config"

    def component_payloads(
        self, prefix: str = DEFAULT_DISCOVERY_PREFIX, abbreviate: bool = True
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        key = ABBREVIATIONS if abbreviate else {}
        for component in self.components:
            payload = component.to_payload(abbreviate)
            payload.pop(key.get("platform", "platform"))  # the topic names the platform
            payload[key.get("device", "device")] = self.device.to_payload(abbreviate)
            payload[key.get("origin", "origin")] = self.origin.to_payload(abbreviate)
            payload = {**self._shared(abbreviate), **payload}  # the entity's own options win
            yield self.component_topic(component, prefix), payload

    # -- both --------------------------------------------------------------------------------
    def messages(
        self, prefix: str = DEFAULT_DISCOVERY_PREFIX, legacy: bool = False, abbreviate: bool = True
    ) -> list[tuple[str, bytes]]:
        """(topic, retained payload) pairs that announce this device in the chosen format."""
        if legacy:
            return [
                (topic, _encode(payload)) for topic, payload in self.component_payloads(prefix, abbreviate)
            ]
        return [(self.device_topic(prefix), _encode(self.device_payload(abbreviate)))]

    def all_topics(self, prefix: str = DEFAULT_DISCOVERY_PREFIX) -> list[str]:
        """Every config topic this device could occupy in either format (for removal)."""
        return [self.device_topic(prefix)] + [
            self.component_topic(component, prefix) for component in self.components
        ]

    def _shared(self, abbreviate: bool) -> dict[str, Any]:
        key = ABBREVIATIONS if abbreviate else {}
        shared: dict[str, Any] = {}
        if self.availability:
            shared[key.get("availability", "availability")] = [
                entry.to_payload(abbreviate) for entry in self.availability
            ]
        if self.availability_mode is not None:
            shared[key.get("availability_mode", "availability_mode")] = self.availability_mode
        return shared


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=False).encode()
