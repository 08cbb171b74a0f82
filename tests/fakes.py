"""An in-memory transport for unit tests of the services (integration tests use Mosquitto)."""

from __future__ import annotations

import time

import paho.mqtt.client as paho

from distree_mqtt.transport import Message, MessageHandler, Transport


class MemoryTransport(Transport):
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool]] = []
        self.retained: dict[str, bytes] = {}
        self.handlers: list[tuple[str, MessageHandler]] = []
        self.stopped = False

    def publish(self, topic, payload, qos=1, retain=False, expiry_s=None) -> None:  # type: ignore[no-untyped-def]
        data = payload.encode() if isinstance(payload, str) else payload
        self.published.append((topic, data, retain))
        if retain:
            self.retained[topic] = data

    def subscribe(self, topic_filter, handler, qos=1) -> None:  # type: ignore[no-untyped-def]
        match = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        self.handlers.append((match, handler))

    def unsubscribe(self, topic_filter) -> None:  # type: ignore[no-untyped-def]
        match = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
        self.handlers = [(f, h) for f, h in self.handlers if f != match]

    def stop(self) -> None:
        self.stopped = True

    def deliver(self, topic: str, payload: bytes | str) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        for topic_filter, handler in self.handlers:
            if paho.topic_matches_sub(topic_filter, topic):
                handler(Message(topic, data, received_at=time.time()))

    def on(self, topic: str) -> list[bytes]:
        return [payload for published_topic, payload, _ in self.published if published_topic == topic]
