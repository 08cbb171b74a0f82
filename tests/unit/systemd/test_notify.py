"""The sd_notify client against a real Unix datagram socket standing in for systemd."""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from distree_mqtt.systemd import SystemdNotifier
from distree_mqtt.systemd.notify import SEND_TIMEOUT_S
from tests.notify_socket import NotifySocket


@pytest.fixture(params=["path", "abstract"])
def systemd_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    with NotifySocket(abstract=request.param == "abstract") as listener:
        yield listener


def test_each_notification_is_one_datagram(systemd_socket: NotifySocket) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": systemd_socket.address})
    assert notifier.enabled
    assert notifier.ready("stage 0: 0.0 req/s")
    assert systemd_socket.receive() == {"READY": "1", "STATUS": "stage 0: 0.0 req/s"}
    assert notifier.status("queue 3/64")
    assert systemd_socket.receive() == {"STATUS": "queue 3/64"}
    assert notifier.watchdog()
    assert systemd_socket.receive() == {"WATCHDOG": "1"}
    assert notifier.stopping("stopping")
    assert systemd_socket.receive() == {"STOPPING": "1", "STATUS": "stopping"}


def test_a_newline_cannot_inject_another_assignment(systemd_socket: NotifySocket) -> None:
    notifier = SystemdNotifier(systemd_socket.address)
    notifier.status("fine\nREADY=1")
    assert systemd_socket.receive() == {"STATUS": "fine READY=1"}


def test_outside_systemd_every_call_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    notifier.start_watchdog(lambda: True)  # no thread, nothing to close
    notifier.close()


def test_a_vanished_socket_is_reported_not_raised() -> None:
    with NotifySocket() as listener:
        address = listener.address
    assert not SystemdNotifier(address).ready()


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        # The watchdog belongs to another process (we are a child of the service's main PID).
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_the_environment(environ: dict[str, str], interval_s: float | None) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "/run/systemd/notify", **environ})
    assert notifier.watchdog_interval_s == interval_s


def _watchdog_times(listener: NotifySocket, duration_s: float) -> list[float]:
    times = []
    deadline = time.monotonic() + duration_s
    while (left := deadline - time.monotonic()) > 0:
        message = listener.receive(left)
        if message is not None and message.get("WATCHDOG") == "1":
            times.append(time.monotonic())
    return times


def test_watchdog_pings_at_half_the_interval(systemd_socket: NotifySocket) -> None:
    notifier = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": systemd_socket.address, "WATCHDOG_USEC": "400000"}
    )
    notifier.start_watchdog(lambda: True)
    try:
        times = _watchdog_times(systemd_socket, 1.5)
    finally:
        notifier.close()
    gaps = [after - before for before, after in itertools.pairwise(times)]
    assert len(times) >= 3, times
    assert min(gaps) >= 0.15  # never faster than half of 0.4 s (small slack for clocks)
    assert statistics.median(gaps) < 0.35  # and comfortably before the 0.4 s deadline
    assert _watchdog_times(systemd_socket, 0.5) == []  # close() stops the pings


def test_watchdog_is_withheld_while_unhealthy(systemd_socket: NotifySocket) -> None:
    healthy = threading.Event()
    notifier = SystemdNotifier(systemd_socket.address, watchdog_interval_s=0.2)
    notifier.start_watchdog(healthy.is_set)
    try:
        assert _watchdog_times(systemd_socket, 0.6) == []
        healthy.set()
        assert len(_watchdog_times(systemd_socket, 0.6)) >= 2
        healthy.clear()
        time.sleep(0.15)  # a ping decided before the switch may still be on its way
        systemd_socket.drain()
        assert _watchdog_times(systemd_socket, 0.6) == []
    finally:
        notifier.close()


def test_a_failing_health_check_counts_as_unhealthy(systemd_socket: NotifySocket) -> None:
    def broken() -> bool:
        raise RuntimeError("health check bug")

    notifier = SystemdNotifier(systemd_socket.address, watchdog_interval_s=0.2)
    notifier.start_watchdog(broken)
    try:
        assert _watchdog_times(systemd_socket, 0.6) == []
    finally:
        notifier.close()


def test_a_full_socket_queue_never_hangs_the_daemon() -> None:
    with NotifySocket() as listener:  # nobody reads: the queue fills up
        notifier = SystemdNotifier(listener.address)
        for _ in range(10_000):
            started = time.monotonic()
            if not notifier.status("x" * 1000):
                break
        else:
            pytest.fail("the queue never filled")
        assert time.monotonic() - started < SEND_TIMEOUT_S + 1.0
