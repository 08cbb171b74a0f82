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

    @abstractmethod
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        """Call `handler` (on the network thread: keep it short) for every matching message."""

    @abstractmethod
    def unsubscribe(self, topic_filter: str) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...
