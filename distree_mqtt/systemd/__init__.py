"""systemd integration: readiness, status and watchdog notifications for `Type=notify` units."""

from distree_mqtt.systemd.daemon import NotifiedService, run_notified
from distree_mqtt.systemd.notify import SystemdNotifier

__all__ = ["NotifiedService", "SystemdNotifier", "run_notified"]
