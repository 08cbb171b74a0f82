"""The transport interface the runtimes talk to; MQTT is one implementation of it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    received_at: float = 0.0  # time.time() when the transport handed it over
    # Set when the subscription defers its acknowledgement: pass it to Transport.ack() once
    # the message has been fully handled (the broker redelivers it until then).
    ack_id: tuple[int, int] | None = None


MessageHandler = Callable[[Message], None]


class Transport(ABC):
    @abstractmethod
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> None:
        """Queue a message; `expiry_s` lets a broker that can (MQTT 5) drop it once stale."""

    def publish_then(
        self,
        topic: str,
        payload: bytes | str,
        then: Callable[[], None],
        qos: int = 1,
        expiry_s: float | None = None,
    ) -> None:
        """Publish, and call `then` once the broker has the message (here: at once)."""
        self.publish(topic, payload, qos=qos, expiry_s=expiry_s)
        then()

    def ack(self, ack_id: tuple[int, int] | None) -> None:  # noqa: B027 - optional hook
        """Acknowledge a message delivered with an `ack_id` (transports without acks: nothing)."""

    @abstractmethod
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Call `handler` (on the network thread: keep it short) for every matching message."""

    @abstractmethod
    def unsubscribe(self, topic_filter: str) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...
