"""Publish discovery retained, again whenever Home Assistant comes online, and remove it cleanly.

Home Assistant announces `online` on `<discovery prefix>/status` when it (re)starts; retained
configs would survive that, but a broker without persistence, or a user who deleted the device
by hand, would not see them again without this re-publish.
"""

from __future__ import annotations

import logging
import threading

from distree_mqtt.homeassistant.discovery import DEFAULT_DISCOVERY_PREFIX, DeviceDiscovery
from distree_mqtt.transport import Message, Transport

log = logging.getLogger(__name__)


def birth_topic(prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """Where Home Assistant publishes `online` / `offline`."""
    return f"{prefix}/status"


def publish_discovery(
    transport: Transport,
    discovery: DeviceDiscovery,
    prefix: str = DEFAULT_DISCOVERY_PREFIX,
    legacy: bool = False,
) -> list[str]:
    """Publish one device's discovery retained; returns the config topics written."""
    topics = []
    for topic, payload in discovery.messages(prefix, legacy=legacy):
        transport.publish(topic, payload, qos=1, retain=True)
        topics.append(topic)
    return topics


def removal_messages(
    discovery: DeviceDiscovery, prefix: str = DEFAULT_DISCOVERY_PREFIX
) -> list[tuple[str, bytes]]:
    """Empty retained payloads for every config topic of the device, in both formats."""
    return [(topic, b"") for topic in discovery.all_topics(prefix)]


class DiscoveryPublisher:
    """Keeps the set of announced devices; re-announces them when Home Assistant restarts.

    Thread-safe: services call it from their network thread (a device appears) and from their
    main thread (start, stop).
    """

    def __init__(
        self, transport: Transport, prefix: str = DEFAULT_DISCOVERY_PREFIX, legacy: bool = False
    ) -> None:
        self.transport = transport
        self.prefix = prefix
        self.legacy = legacy
        self._devices: dict[str, DeviceDiscovery] = {}
        self._lock = threading.Lock()
        self.republished = 0

    def start(self) -> None:
        """Listen for Home Assistant's birth message (call before the transport connects)."""
        self.transport.subscribe(birth_topic(self.prefix), self._on_home_assistant_status)

    @property
    def devices(self) -> dict[str, DeviceDiscovery]:
        with self._lock:
            return dict(self._devices)

    def publish(self, discovery: DeviceDiscovery) -> None:
        """Announce (or update) one device; unchanged announcements are not sent again."""
        with self._lock:
            if self._devices.get(discovery.node_id) == discovery:
                return
            self._devices[discovery.node_id] = discovery
        publish_discovery(self.transport, discovery, self.prefix, self.legacy)

    def withdraw(self, node_id: str) -> None:
        """Remove one device from Home Assistant (both formats)."""
        with self._lock:
            discovery = self._devices.pop(node_id, None)
        if discovery is not None:
            self._publish_removal(discovery)

    def remove_all(self) -> None:
        """Remove every device this publisher announced (both formats)."""
        with self._lock:
            discoveries = list(self._devices.values())
            self._devices.clear()
        for discovery in discoveries:
            self._publish_removal(discovery)

    def republish(self) -> None:
        with self._lock:
            discoveries = list(self._devices.values())
        for discovery in discoveries:
            publish_discovery(self.transport, discovery, self.prefix, self.legacy)
        self.republished += 1

    def _publish_removal(self, discovery: DeviceDiscovery) -> None:
        for topic, payload in removal_messages(discovery, self.prefix):
            self.transport.publish(topic, payload, qos=1, retain=True)

    def _on_home_assistant_status(self, message: Message) -> None:
        if message.payload.strip() == b"online":
            log.info("Home Assistant came online: re-publishing discovery")
            self.republish()
