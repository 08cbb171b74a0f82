"""Brokers behind one small interface: publish, subscribe, stop."""

from distree_mqtt.transport.base import Message, MessageHandler, Transport
from distree_mqtt.transport.mqtt import LastWill, MqttTransport

__all__ = ["LastWill", "Message", "MessageHandler", "MqttTransport", "Transport"]
