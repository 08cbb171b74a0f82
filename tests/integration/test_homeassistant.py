"""Home Assistant discovery over real Mosquitto: published by the orchestrator, published again
when Home Assistant announces itself, removed by `distree ha remove`."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator

import pytest

from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.protocol import DeviceInfo
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message, MqttTransport
from tests.cli_process import run_distree

_names = itertools.count()


class Recorder:
    """Every message on homeassistant/# (retained ones first), for assertions."""

    def __init__(self, broker_url: str) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.transport = MqttTransport(
            load_settings(broker={"url": broker_url}).broker, client_id=f"ha-recorder-{next(_names)}"
        )
        self.transport.subscribe("homeassistant/#", self._record)
        self.transport.start()

    def _record(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [message.payload for message in self.messages if message.topic == topic]

    def wait_for(self, topic: str, count: int, timeout_s: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(payloads := self.on(topic)) >= count:
                return payloads
            time.sleep(0.05)
        raise AssertionError(f"{topic}: {len(self.on(topic))} messages, expected {count}")

    def stop(self) -> None:
        self.transport.stop()


@pytest.fixture
def pipeline() -> str:
    return f"ha{next(_names)}"


@pytest.fixture
def orchestrator(broker, pipeline) -> Iterator[OrchestratorService]:
    service = OrchestratorService(load_settings(broker={"url": broker.url}, pipeline=pipeline))
    service.start()
    yield service
    service.stop()


def _retained_configs(broker_url: str, node_id: str) -> dict[str, bytes]:
    recorder = Recorder(broker_url)
    # The broker sends a new subscription its retained messages before anything published later,
    # so once a fresh marker arrives every retained config has too.
    marker = f"homeassistant/distree_marker/{next(_names)}"
    recorder.transport.publish_and_wait(marker, b"x")
    recorder.wait_for(marker, 1)
    recorder.stop()
    return {
        message.topic: message.payload
        for message in recorder.messages
        if message.payload and f"/{node_id}" in message.topic
    }


def test_orchestrator_publishes_discovery_republishes_on_birth_and_remove_clears_it(
    broker, pipeline, orchestrator
) -> None:
    node_id = f"distree_{pipeline}"
    config = f"homeassistant/device/{node_id}/config"
    topics = Topics(pipeline=pipeline)
    recorder = Recorder(broker.url)
    try:
        [payload] = recorder.wait_for(config, 1)  # retained, published on start
        announced = json.loads(payload)
        assert announced["o"]["name"] == "distree-mqtt"
        assert announced["avty"][0]["t"] == topics.status("orchestrator")
        assert "latency_target" in announced["cmps"] and "exit_rate_stage_2" in announced["cmps"]

        admin = orchestrator.transport
        assert isinstance(admin, MqttTransport)
        descriptor = DeviceInfo(
            device="gw-1",
            stage_index=1,
            num_stages=3,
            model_id="m",
            model_hash="0" * 64,
            codec="int8",
            started_at=time.time(),
        )
        admin.publish_and_wait(topics.device_info("gw-1"), descriptor.model_dump_json(), retain=True)
        device_config = f"homeassistant/device/{node_id}_gw-1/config"
        assert json.loads(recorder.wait_for(device_config, 1)[0])["dev"]["via_device"] == node_id

        admin.publish_and_wait("homeassistant/status", "online")  # Home Assistant restarted
        recorder.wait_for(config, 2)
        recorder.wait_for(device_config, 2)

        admin.publish_and_wait(topics.device_info("gw-1"), b"", retain=True)  # withdrawn with its config
        # the orchestrator clears the config when it handles the withdrawal, after the publish returns
        assert recorder.wait_for(device_config, 3)[-1] == b""
    finally:
        recorder.stop()
    assert set(_retained_configs(broker.url, node_id)) == {config}

    # a camera's per-component config, left by another process, and someone else's config
    leftover = f"homeassistant/sensor/{node_id}_camera_cam/snapshot/config"
    other = "homeassistant/sensor/someone_else/x/config"
    helper = Recorder(broker.url)
    helper.transport.publish_and_wait(leftover, json.dumps({"o": {"name": "distree-mqtt"}}), retain=True)
    helper.transport.publish_and_wait(other, json.dumps({"o": {"name": "distree-mqtt"}}), retain=True)
    helper.stop()

    done = run_distree("ha", "remove", "--broker", broker.url, "--pipeline", pipeline)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stderr
    assert _retained_configs(broker.url, node_id) == {}
    assert other in _retained_configs(broker.url, "someone_else")  # not ours: untouched
    cleanup = Recorder(broker.url)
    cleanup.transport.publish_and_wait(other, b"", retain=True)
    cleanup.stop()
