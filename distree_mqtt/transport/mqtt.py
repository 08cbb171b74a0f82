"""paho-mqtt 2.x transport: first connect retried with backoff, then paho's own reconnects.

Subscriptions are remembered and renewed on every (re)connect, so a broker restart is
invisible to the runtimes apart from the gap. Works with MQTT 5 and 3.1.1 brokers.

QoS 1 publishes made while the broker is away wait in paho's outbox (at most
MAX_QUEUED_MESSAGES, then they fail and are counted) and leave after the reconnect. With a
persistent session the broker also keeps what it owes this client. Subscriptions named in
`deferred_ack` are acknowledged only when the runtime calls ack(), so work a process took but
never finished is redelivered when it comes back with the same client id.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from distree_mqtt.settings import BrokerSettings
from distree_mqtt.transport.base import Message, MessageHandler, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LastWill:
    topic: str
    payload: bytes | str
    retain: bool = True
    qos: int = 1


def _disable_nagle(client: paho.Client) -> None:
    """Small MQTT packets must not wait for the peer's delayed ACK (about 40 ms a hop)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # TLS sockets are socket.socket subclasses too
        with contextlib.suppress(OSError):  # not a TCP socket (e.g. a Unix socket)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _filter_for_matching(topic_filter: str) -> str:
    """`$share/<group>/a/b` delivers topics matching `a/b`."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter


def tls_context(settings: BrokerSettings) -> ssl.SSLContext:
    """The client's TLS context: the CA to trust and, for mutual TLS, its own certificate.
    A file that is missing or not PEM is a one-line error naming the setting and the file,
    not ssl's bare "PEM lib"."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"broker.ca_file {settings.ca_file}: cannot load a PEM CA bundle ({error})"
        ) from None
    if settings.cert_file is None:
        if settings.key_file is not None:
            raise ValueError(f"broker.key_file {settings.key_file} is set without broker.cert_file")
        return context

    def no_passphrase() -> bytes:
        # OpenSSL would otherwise prompt on a terminal a service does not have.
        raise ValueError(
            f"broker.key_file {settings.key_file or settings.cert_file} is encrypted: "
            "a service cannot type its passphrase; store the key unencrypted with mode 0600"
        )

    try:
        context.load_cert_chain(
            str(settings.cert_file), str(settings.key_file) if settings.key_file else None, no_passphrase
        )
    except (OSError, ssl.SSLError) as error:
        files = f"{settings.cert_file}" + (f" with key {settings.key_file}" if settings.key_file else "")
        raise ValueError(
            f"broker.cert_file {files}: cannot load a PEM client certificate and its key ({error})"
        ) from None
    return context


class MqttTransport(Transport):
    MAX_QUEUED_MESSAGES = 10_000

    def __init__(
        self,
        settings: BrokerSettings,
        client_id: str,
        will: LastWill | None = None,
        on_connected: MessageHandler | None = None,
        persistent_session: bool = False,
        receive_maximum: int | None = None,
        maximum_packet_bytes: int | None = None,
        session_expiry_s: int = 3600,
        deferred_ack: tuple[str, ...] = (),
    ) -> None:
        self._settings = settings
        self._endpoint = settings.endpoint()
        self.is_v5 = settings.protocol == "5"
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self.is_v5 else paho.MQTTv311,
            clean_session=None if self.is_v5 else not persistent_session,
            manual_ack=bool(deferred_ack),
        )
        self._persistent = persistent_session
        self._session_expiry_s = session_expiry_s
        self._deferred_ack = tuple(_filter_for_matching(topic_filter) for topic_filter in deferred_ack)
        # publish_then(): callbacks waiting for the broker's PUBACK, by message id.
        self._confirmations: dict[int, Callable[[], None]] = {}
        self._confirm_lock = threading.Lock()
        # MQTT 5: the broker keeps at most this many QoS 1 messages in flight to us (backpressure).
        self._receive_maximum = receive_maximum
        # MQTT 5: the broker drops larger packets instead of making us read them into memory.
        self._maximum_packet_bytes = maximum_packet_bytes
        if self._endpoint.username is not None:
            self._client.username_pw_set(self._endpoint.username, self._endpoint.password)
        if self._endpoint.tls:
            self._client.tls_set_context(tls_context(settings))
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        # Quick first retries (a broker restart takes about a second), then backing off.
        self._client.reconnect_delay_set(min_delay=0.25, max_delay=8)  # type: ignore[arg-type]
        self._client.max_queued_messages_set(self.MAX_QUEUED_MESSAGES)
        self._subscriptions: dict[str, tuple[int, MessageHandler]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._on_connected = on_connected
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_published
        self.connect_count = 0
        self.failed_publishes = 0
        self.queued_while_offline = 0  # QoS 1 publishes held for the reconnect

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, wait_s: float = 10.0) -> None:
        """Connect (retrying with exponential backoff) and start the network thread."""

        @retry(
            retry=retry_if_exception_type(OSError),
            stop=stop_after_attempt(self._settings.connect_attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        )
        def connect() -> None:
            properties = None
            if self.is_v5 and (self._persistent or self._receive_maximum or self._maximum_packet_bytes):
                properties = Properties(PacketTypes.CONNECT)
                if self._persistent:
                    properties.SessionExpiryInterval = self._session_expiry_s
                if self._receive_maximum:
                    properties.ReceiveMaximum = min(65535, max(1, self._receive_maximum))
                if self._maximum_packet_bytes:
                    properties.MaximumPacketSize = self._maximum_packet_bytes
            self._client.connect(
                self._endpoint.host,
                self._endpoint.port,
                keepalive=self._settings.keepalive_s,
                clean_start=not self._persistent if self.is_v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )

        try:
            connect()
        except OSError as error:
            raise ConnectionError(
                f"cannot reach the broker at {self._endpoint.host}:{self._endpoint.port}: {error}"
            ) from None
        self._client.loop_start()
        if not self._connected.wait(wait_s):
            self._client.loop_stop()
            raise ConnectionError(
                f"broker at {self._endpoint.host}:{self._endpoint.port} did not accept the connection "
                f"(check credentials and protocol version {self._settings.protocol})"
            )

    def stop(self) -> None:
        """Disconnect cleanly; a persistent session ends with it (nothing is owed any more)."""
        properties = None
        if self.is_v5 and self._persistent:
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
        self._client.disconnect(properties=properties)
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def running(self) -> bool:
        """Whether paho's network thread is alive (it keeps reconnecting while it is)."""
        thread = self._client._thread
        return thread is not None and thread.is_alive()

    # -- interface -------------------------------------------------------------------------
    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
    ) -> None:
        self._publish(topic, payload, qos, retain, expiry_s)

    def _publish(
        self, topic: str, payload: bytes | str, qos: int, retain: bool, expiry_s: float | None
    ) -> paho.MQTTMessageInfo | None:
        """paho's handle of the message, or None when it was dropped (counted and logged)."""
        properties = None
        if self.is_v5 and expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = max(1, int(expiry_s + 0.999))
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc == paho.MQTT_ERR_NO_CONN and qos > 0:
            self.queued_while_offline += 1  # paho sends it after the reconnect
            return info
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.failed_publishes += 1
            log.warning("publish to %s failed (%s)", topic, paho.error_string(info.rc))
            return None
        return info

    def publish_then(
        self,
        topic: str,
        payload: bytes | str,
        then: Callable[[], None],
        qos: int = 1,
        expiry_s: float | None = None,
    ) -> None:
        """Publish; call `then` (on the network thread) when the broker has acknowledged it."""
        info = self._publish(topic, payload, qos, False, expiry_s)
        if info is None or qos == 0:
            then()
            return
        # Whoever takes the entry calls `then`: here if the PUBACK came before this line (paho
        # marks the message published before its callback runs), else the callback.
        with self._confirm_lock:
            self._confirmations[info.mid] = then
            # (is_published() raises for a message queued while offline; the flag is what it reads)
            ready = self._confirmations.pop(info.mid) if info._published else None
        if ready is not None:
            ready()

    def ack(self, ack_id: tuple[int, int] | None) -> None:
        """Acknowledge a deferred delivery; one from before a reconnect is skipped, because the
        broker redelivers it on the new connection (and its message id may be reused)."""
        if ack_id is None:
            return
        connection, mid = ack_id
        if connection == self.connect_count:
            self._client.ack(mid, 1)

    def publish_and_wait(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout_s: float = 5.0
    ) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout_s)

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        with self._lock:
            self._subscriptions[topic_filter] = (qos, handler)
        if self._connected.is_set():
            self._client.subscribe(topic_filter, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
        self._client.unsubscribe(topic_filter)

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        self.connect_count += 1
        _disable_nagle(client)
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        for topic_filter, (qos, _) in subscriptions:
            client.subscribe(topic_filter, qos=qos)
        self._connected.set()
        if self._on_connected is not None:
            self._on_connected(Message(topic="", payload=b"", received_at=time.time()))

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._connected.clear()
        if reason_code.value != 0:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _handle_published(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._confirm_lock:
            then = self._confirmations.pop(mid, None)
        if then is not None:
            try:
                then()
            except Exception:
                log.exception("publish confirmation handler failed")

    def _handle_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        deferred = (
            message.qos > 0
            and bool(self._deferred_ack)
            and any(paho.topic_matches_sub(f, message.topic) for f in self._deferred_ack)
        )
        received = Message(
            topic=message.topic,
            payload=bytes(message.payload),
            retain=bool(message.retain),
            received_at=time.time(),
            ack_id=(self.connect_count, message.mid) if deferred else None,
        )
        with self._lock:
            handlers = [
                handler
                for topic_filter, (_, handler) in self._subscriptions.items()
                if paho.topic_matches_sub(_filter_for_matching(topic_filter), message.topic)
            ]
        for handler in handlers:
            try:
                handler(received)
            except Exception:  # a handler bug must never kill the network thread
                log.exception("handler for %s failed", message.topic)
        if self._deferred_ack and not deferred and message.qos > 0:
            client.ack(message.mid, message.qos)
