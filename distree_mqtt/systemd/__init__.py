"""systemd integration: readiness, status and watchdog notifications for `Type=notify` units."""

from distree_mqtt.systemd.notify import SystemdNotifier

__all__ = ["SystemdNotifier"]
