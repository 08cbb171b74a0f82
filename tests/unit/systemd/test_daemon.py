"""run_notified: the daemon loop's conversation with systemd, signals included."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from distree_mqtt.systemd import SystemdNotifier, run_notified
from tests.notify_socket import NotifySocket


class CountingService:
    def __init__(self, fail_status: bool = False) -> None:
        self.calls = 0
        self.stopped = 0
        self.fail_status = fail_status

    def status_line(self) -> str:
        self.calls += 1
        if self.fail_status:
            raise RuntimeError("status bug")
        return f"stage 0: {self.calls} lines"

    def healthy(self) -> bool:
        return True

    def stop(self) -> None:
        self.stopped += 1


def _sigterm_after(delay_s: float) -> threading.Timer:
    timer = threading.Timer(delay_s, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    return timer


def _read_in_background(listener: NotifySocket) -> Callable[[], None]:
    """Keep the socket's queue empty, as systemd does, while the main thread runs the daemon;
    returns a function that reads what is left and stops the reader."""
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            listener.receive(0.05)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def finish() -> None:
        time.sleep(0.2)
        done.set()
        reader.join()

    return finish


def test_ready_status_watchdog_then_stopping_on_sigterm() -> None:
    service = CountingService()
    before = signal.getsignal(signal.SIGTERM)
    with NotifySocket() as listener:
        finish_reading = _read_in_background(listener)
        notifier = SystemdNotifier(listener.address, watchdog_interval_s=0.2)
        _sigterm_after(1.0)
        run_notified(service, notifier, status_interval_s=0.3)
        finish_reading()
        messages = list(listener.received)
    assert messages[0] == {"READY": "1", "STATUS": "stage 0: 1 lines"}
    assert {"STATUS": "stage 0: 2 lines"} in messages
    assert {"WATCHDOG": "1"} in messages
    assert messages[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    assert service.stopped == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_failing_status_line_does_not_stop_the_daemon() -> None:
    service = CountingService(fail_status=True)
    with NotifySocket() as listener:
        _sigterm_after(0.5)
        run_notified(service, SystemdNotifier(listener.address), status_interval_s=0.2)
        first = listener.receive(1.0)
    assert first == {"READY": "1", "STATUS": "running (status unavailable)"}
    assert service.stopped == 1


def test_outside_systemd_it_just_waits_for_the_signal() -> None:
    service = CountingService()
    _sigterm_after(0.3)
    run_notified(service, SystemdNotifier(None), status_interval_s=0.1)
    assert service.stopped == 1
