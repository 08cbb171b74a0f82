"""`distree camera` against real Mosquitto and real stage devices, on a real video file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from distree_mqtt.camera.service import CameraService
from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message, MqttTransport
from tests.integration.camera_scene import Scene, Segment, first_of_each_label, write_scene
from tests.integration.test_pipeline import Cluster, _wait_until_online
from tests.waiting import wait_for

TEST_SET = load_dataset(DataSpec()).test
DIGITS = [3, 7, 0]


class Listener:
    """Every message under the pipeline's root, in arrival order."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.transport = MqttTransport(cluster.settings().broker, client_id=f"{cluster.pipeline}-{name}")
        self.transport.subscribe(f"distree/{cluster.pipeline}/#", self._keep)
        self.transport.start()

    def _keep(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def stop(self) -> None:
        self.transport.stop()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    indices = first_of_each_label(TEST_SET.labels, DIGITS)
    plan = [Segment(None, None, False, 8)]
    for index in indices:
        # Slide in (motion), then stand still longer than end_after_s (no requests: the detection ends).
        plan += [Segment(index, None, True, 24, (4, 30), (3, 0)), Segment(index, None, False, 30, (73, 30))]
    return write_scene(
        tmp_path_factory.mktemp("camera") / "digits.avi", TEST_SET.images[:, 0], TEST_SET.labels, plan
    )


@pytest.fixture
def cluster(broker, request) -> Iterator[Cluster]:
    running = Cluster(broker.url, f"cam{abs(hash(request.node.name)) % 100_000}")
    yield running
    running.stop()


def _camera(cluster: Cluster, **options) -> CameraService:
    settings = load_settings(broker={"url": cluster.broker_url}, pipeline=cluster.pipeline, camera=options)
    return CameraService(settings)


def _telemetry(listener: Listener, topics: Topics, camera: str) -> list[dict]:
    return [json.loads(m.payload) for m in listener.on(topics.telemetry(camera))]


def test_motion_frames_run_the_network_and_answers_become_state_events_and_snapshots(cluster, scene) -> None:
    for stage in range(3):
        cluster.add_device(stage)
    orchestrator = cluster.add_orchestrator(mode="static")
    _wait_until_online(cluster)
    topics = Topics(pipeline=cluster.pipeline)
    listener = Listener(cluster, "listener")
    camera = _camera(
        cluster,
        camera_id="porch",
        source=str(scene.path),
        fps=20,
        classes=[str(d) for d in DIGITS],
        min_confidence=0.5,
        min_hits=2,
        end_after_s=0.8,
        max_in_flight=8,
        deadline_ms=3000,
        telemetry_interval_s=0.5,
    )
    try:
        camera.start()
        time.sleep(0.5)
        # Garbage on the camera's results topic is counted, never fatal.
        listener.transport.publish_and_wait(topics.results("porch"), b"\x00 not a result")
        assert camera.wait(timeout_s=40), "the video did not end"
    finally:
        camera.stop()
    # `stopped` is the camera's last publish: once it is here, everything before it is too.
    stopped = topics.status("porch")
    wait_for(lambda: b"stopped" in [m.payload for m in listener.on(stopped)], 10, "the camera's `stopped`")
    listener.stop()

    frames = len(scene.frame_labels)
    moving = sum(scene.frame_moving)
    final = _telemetry(listener, topics, "porch")[-1]
    assert final["kind"] == "camera" and final["frames_read"] == frames
    # Motion frames (and only they) run the network.
    assert abs(final["motion_frames"] - moving) <= 6, (final["motion_frames"], moving)
    assert final["requests_sent"] + final["skipped"] == final["motion_frames"]
    assert final["frames_read"] - final["motion_frames"] >= frames - moving - 6
    results = [json.loads(m.payload) for m in listener.on(topics.results("porch")) if m.payload[:1] == b"{"]
    assert len(results) == final["results"] == final["requests_sent"] > 0.8 * moving
    shown = [scene.frame_labels[int(r["request_id"].split("-")[0])] for r in results]
    requested_frames = [int(r["request_id"].split("-")[0]) for r in results]
    assert all(scene.frame_moving[index] for index in requested_frames), "a still frame ran the network"
    correct = sum(r["label"] == label for r, label in zip(results, shown, strict=True))
    assert correct >= 0.85 * len(results), (correct, len(results))
    assert final["invalid_results"] == 1 and final["errors"] == 0

    # Retained state and snapshot, as a newcomer (Home Assistant) sees them.
    retained: dict[str, bytes] = {}
    late = MqttTransport(cluster.settings().broker, client_id=f"{cluster.pipeline}-late")
    late.subscribe(f"{topics.camera('porch')}/#", lambda m: retained.__setitem__(m.topic, m.payload))
    late.subscribe(topics.status("porch"), lambda m: retained.__setitem__(m.topic, m.payload))
    late.start()
    # Retained messages reach a new subscription before anything published after it: wait for a marker.
    marker = f"{topics.camera('porch')}/test-marker"
    late.publish_and_wait(marker, b"x")
    wait_for(lambda: marker in retained, 10, "the marker after the retained messages")
    late.stop()
    state = json.loads(retained[topics.camera_state("porch")])
    assert set(state) >= {"label", "class_name", "confidence", "exit_stage", "request_id", "at", "degraded"}
    assert state["class_name"] == str(state["label"]) and 0 < state["confidence"] <= 1
    assert abs(state["at"] - time.time()) < 60
    snapshot = cv2.imdecode(
        np.frombuffer(retained[topics.camera_snapshot("porch")], np.uint8), cv2.IMREAD_COLOR
    )
    assert snapshot is not None and snapshot.shape == (120, 160, 3)
    assert retained[topics.status("porch")] == b"stopped"
    for digit in DIGITS:
        assert retained[topics.camera_detected("porch", str(digit))] == b"OFF"

    # One detection per digit, in the order they appeared: new, updates, end.
    events = [json.loads(m.payload) for m in listener.on(topics.camera_events("porch"))]
    assert [e["class_name"] for e in events if e["type"] == "new"] == [str(d) for d in DIGITS]
    for digit in DIGITS:
        own = [e for e in events if e["class_name"] == str(digit)]
        kinds = [e["type"] for e in own]
        assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) <= {"update"}, kinds
        assert len({e["id"] for e in own}) == 1
        assert own[0]["end_time"] is None and own[-1]["end_time"] >= own[-1]["start_time"]
        assert own[0]["camera"] == "porch" and own[0]["before"] is None and own[-1]["after"]["end_time"]
        switches = [m.payload for m in listener.on(topics.camera_detected("porch", str(digit)))]
        assert switches == [b"ON", b"OFF"]
    statuses = [m.payload for m in listener.on(topics.status("porch"))]
    assert b"online" in statuses and statuses[-1] == b"stopped"

    # The orchestrator and the devices do not take the camera for a stage device; the only entry
    # about it is the orchestrator's on the garbage result published above.
    assert "porch" not in orchestrator.telemetry
    errors = [json.loads(m.payload) for m in listener.on(topics.errors)]
    about_porch = [(e["component"], e["topic"], e["reason"]) for e in errors if "porch" in e["topic"]]
    assert about_porch == [("orchestrator", topics.results("porch"), "invalid result")], errors


def test_a_slow_pipeline_drops_frames_instead_of_queueing_them(cluster, scene) -> None:
    cluster.add_device(0, slowdown=1000)  # an emulated very slow first device
    cluster.add_device(1)
    cluster.add_device(2)
    _wait_until_online(cluster)
    topics = Topics(pipeline=cluster.pipeline)
    listener = Listener(cluster, "listener")
    camera = _camera(
        cluster,
        camera_id="drive",
        source=str(scene.path),
        fps=20,
        motion_method="none",
        max_in_flight=1,
        deadline_ms=5000,
        telemetry_interval_s=0.5,
    )
    try:
        camera.start()
        time.sleep(3.0)
        in_flight_seen = camera.telemetry().in_flight
    finally:
        camera.stop()
    listener.stop()
    reports = _telemetry(listener, topics, "drive")
    final = reports[-1]
    assert in_flight_seen <= 1
    assert final["skipped"] > 0 and final["requests_sent"] > 0
    assert max(report["skipped_fps"] for report in reports) > 1
    assert final["requests_sent"] + final["skipped"] == final["motion_frames"]
    assert final["results"] + final["timeouts"] + final["rejected"] == final["requests_sent"]


def test_a_missing_source_fails_in_one_line_before_going_online(cluster, tmp_path: Path) -> None:
    from distree_mqtt.camera.sources import SourceError

    with pytest.raises(SourceError, match="no such file"):
        _camera(cluster, source=str(tmp_path / "nothing.avi"))
