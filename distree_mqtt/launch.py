"""Start a private broker and component processes on this machine (demo and benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from distree_mqtt.broker import MosquittoBroker, mosquitto_available
from distree_mqtt.broker.embedded import EmbeddedBroker, embedded_available
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message, MqttTransport


def start_broker(choice: str) -> tuple[Any, str]:
    if choice in ("auto", "mosquitto") and mosquitto_available():
        return MosquittoBroker().start(), "5"
    if choice == "mosquitto":
        raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    if not embedded_available():
        raise RuntimeError("no broker: install mosquitto, or pip install amqtt for the embedded broker")
    return EmbeddedBroker().start(), "3.1.1"


class Processes:
    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def spawn(self, arguments: list[str], environment: dict[str, str]) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "distree_mqtt.cli.main", *arguments]
        child = subprocess.Popen(
            command, env={**os.environ, **environment}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        for child in self.children:
            if child.poll() is not None:
                error = (child.stderr.read() if child.stderr else b"").decode(errors="replace").strip()
                raise RuntimeError(
                    f"a demo process exited early: {error.splitlines()[-1] if error else child.returncode}"
                )

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_online(
    url: str, protocol: str, pipeline: str, expected: set[str], processes: Processes, timeout_s: float = 60
) -> None:
    """Wait until every expected component has published a retained `online` status."""
    settings = load_settings(broker={"url": url, "protocol": protocol}, pipeline=pipeline)
    topics = Topics(pipeline=pipeline)
    online: set[str] = set()
    ready = threading.Event()

    def on_status(message: Message) -> None:
        if message.payload == b"online":
            online.add(topics.last_level(message.topic))
            if expected <= online:
                ready.set()

    watcher = MqttTransport(settings.broker, client_id="distree-demo-watch")
    watcher.subscribe(topics.all_status, on_status)
    watcher.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.2):
            processes.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"demo processes not online after {timeout_s:.0f} s: missing {sorted(expected - online)}"
                )
    finally:
        watcher.stop()
