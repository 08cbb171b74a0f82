"""Run a started service until SIGINT/SIGTERM, keeping systemd informed.

`READY=1` once the service is up, a `STATUS=` line every few seconds (what `systemctl status`
shows), `WATCHDOG=1` at half the watchdog interval while the service says it is healthy, and
`STOPPING=1` before it stops. Outside systemd the notifications are no-ops and this is just
"wait for a signal, then stop".
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Protocol

from distree_mqtt.systemd.notify import SystemdNotifier

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0


class NotifiedService(Protocol):
    """What a daemon offers to `run_notified`; `start()` has already returned."""

    def status_line(self) -> str:
        """A short human summary, e.g. `stage 1: 12.0 req/s, queue 3/64`."""
        ...

    def healthy(self) -> bool:
        """True while the service makes progress; False withholds the watchdog ping."""
        ...

    def stop(self) -> None: ...


def run_notified(
    service: NotifiedService,
    notifier: SystemdNotifier | None = None,
    status_interval_s: float = STATUS_INTERVAL_S,
    finished: Callable[[float], bool] | None = None,
) -> None:
    """Block until SIGINT or SIGTERM, then stop `service`; call from the main thread.
    `finished(timeout)`, where a service can end by itself (a camera at the end of a file),
    waits up to `timeout` seconds and returns True once it has."""
    notifier = notifier or SystemdNotifier.from_environment()
    stop = threading.Event()
    wait = finished or stop.wait
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        notifier.ready(_status_line(service))
        notifier.start_watchdog(service.healthy)
        while not stop.is_set() and not wait(status_interval_s):
            notifier.status(_status_line(service))
    finally:
        notifier.stopping("stopping")
        try:
            service.stop()
        finally:
            notifier.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _status_line(service: NotifiedService) -> str:
    try:
        return service.status_line()
    except Exception:  # a status bug must not take the daemon down
        log.exception("status line failed")
        return "running (status unavailable)"
