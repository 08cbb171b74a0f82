"""The sd_notify protocol in a few lines of standard library.

systemd passes a Unix datagram socket in `$NOTIFY_SOCKET` (a leading `@` means the abstract
namespace) and, with `WatchdogSec=`, the interval in `$WATCHDOG_USEC`. Outside systemd every
call is a no-op, so the daemons call it unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0


class SystemdNotifier:
    def __init__(self, socket_path: str | None, watchdog_interval_s: float | None = None) -> None:
        self.socket_path = socket_path
        self.watchdog_interval_s = watchdog_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is meant for; a child must not ping.
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            interval = int(usec) / 1e6
        return cls(env.get("NOTIFY_SOCKET") or None, interval)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines; False (and a debug log) when there is nobody to tell."""
        if self.socket_path is None:
            return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        message = "\n".join(line.replace("\n", " ") for line in assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A full receive queue blocks a datagram send; never hang a daemon (or its
                # shutdown) on a notification.
                sock.settimeout(SEND_TIMEOUT_S)
                sock.connect(address)
                sock.sendall(message)
            return True
        except OSError as error:
            log.debug("sd_notify to %s failed: %s", self.socket_path, error)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def start_watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping at half the watchdog interval while `healthy()` holds, so a hung worker (not
        just a dead process) gets the unit restarted."""
        if self.watchdog_interval_s is None or self.socket_path is None or self._thread is not None:
            return
        period = self.watchdog_interval_s / 2

        def loop() -> None:
            while not self._stop.wait(period):
                try:
                    ok = healthy()
                except Exception:  # a broken health check counts as unhealthy
                    log.exception("health check failed")
                    ok = False
                if ok:
                    self.watchdog()
                else:
                    log.warning("unhealthy: withholding the watchdog ping")

        self._thread = threading.Thread(target=loop, name="sd-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
