"""Starting a private broker: Mosquitto where installed (tests, demo)."""

from distree_mqtt.broker.mosquitto import MosquittoBroker, free_port, mosquitto_available

__all__ = ["MosquittoBroker", "free_port", "mosquitto_available"]
