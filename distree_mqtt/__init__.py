"""distree-mqtt: one multi-exit neural network split across edge devices that talk over MQTT."""

__version__ = "0.1.0"
