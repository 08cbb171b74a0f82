"""`distree device` and `distree orchestrator` as processes under a stand-in for systemd: a real
Unix datagram socket in NOTIFY_SOCKET, WATCHDOG_USEC set, real Mosquitto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from distree_mqtt.broker import MosquittoBroker
from tests.notify_socket import NotifySocket

COMMANDS = {
    "device": ["device", "--stage", "0", "--device-id", "notify-stage0"],
    "orchestrator": ["orchestrator"],
}
STATUS_PREFIX = {"device": "stage 0: ", "orchestrator": "adaptive, target "}


@pytest.mark.parametrize("command", COMMANDS)
def test_daemon_talks_to_systemd(broker: MosquittoBroker, command: str) -> None:
    with NotifySocket(abstract=command == "orchestrator") as systemd:
        environ = {
            key: value for key, value in os.environ.items() if not key.startswith(("NOTIFY_", "WATCHDOG_"))
        }
        environ |= {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000"}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distree_mqtt.cli.main",
                *COMMANDS[command],
                "--broker",
                broker.url,
                "--pipeline",
                f"notify-{command}",
            ],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            ready = systemd.wait_for("READY", timeout_s=120)
            assert systemd.received[0] is ready, "nothing may come before READY=1"
            assert ready["READY"] == "1" and ready["STATUS"].startswith(STATUS_PREFIX[command])

            pinged = time.monotonic()
            systemd.wait_for("WATCHDOG", timeout_s=5)
            systemd.wait_for("WATCHDOG", timeout_s=5)
            assert time.monotonic() - pinged < 3  # WATCHDOG_USEC=1 s: a ping every 0.5 s

            refreshed = systemd.wait_for("STATUS", timeout_s=15)
            assert "READY" not in refreshed and refreshed["STATUS"].startswith(STATUS_PREFIX[command])

            process.send_signal(signal.SIGTERM)
            stopping = systemd.wait_for("STOPPING", timeout_s=30)
            assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
            _, errors = process.communicate(timeout=30)
        assert b"Traceback" not in errors, errors.decode(errors="replace")
