"""The camera service with an in-memory transport: requests out, answers in, state and events out;
settings, the CLI's one-line errors, and the orchestrator ignoring camera telemetry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from distree_mqtt.camera.messages import CameraTelemetry
from distree_mqtt.camera.service import CameraService
from distree_mqtt.camera.settings import CameraSettings
from distree_mqtt.camera.sources import CameraSource, SourceError
from distree_mqtt.cli.main import main
from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.protocol import Result, telemetry_kind
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message
from distree_mqtt.wire import decode_envelope
from tests.fakes import MemoryTransport
from tests.waiting import wait_for


def folder_with_a_moving_square(folder: Path, frames: int = 6) -> Path:
    folder.mkdir()
    for index in range(frames):
        image = np.full((60, 80), 20, np.uint8)
        if index >= 2:  # two still frames, then the square moves
            x = 10 + 6 * index
            image[20:40, x : x + 20] = 230
        cv2.imwrite(str(folder / f"{index:03d}.png"), image)
    return folder


def test_triggered_frames_become_requests_and_answers_become_state_events_and_snapshots(tmp_path) -> None:
    transport = MemoryTransport()
    settings = load_settings(
        pipeline="unit",
        camera={
            "camera_id": "yard",
            "source": str(folder_with_a_moving_square(tmp_path / "frames")),
            "fps": 20,
            "classes": ["3"],
            "min_hits": 1,
            "end_after_s": 0.3,
            "telemetry_interval_s": 0.1,
            "max_in_flight": 8,
        },
    )
    camera = CameraService(settings, transport=transport)
    topics = Topics(pipeline="unit")
    camera.start()
    try:
        assert camera.wait(timeout_s=5)
        wait_for(lambda: len(transport.on(topics.stage_input(0))) == 4)
        requests = [decode_envelope(p, 1 << 20).header for p in transport.on(topics.stage_input(0))]
        assert {header.source for header in requests} == {"yard"}
        assert sorted(int(header.request_id.split("-")[0]) for header in requests) == [2, 3, 4, 5]
        assert all(header.tensor.shape == [28, 28] for header in requests)
        transport.deliver(topics.results("yard"), b"{not json")
        for header, label in zip(requests, [3, 3, 5, 3], strict=True):
            answer = Result(
                request_id=header.request_id,
                source="yard",
                outcome="result",
                label=label,
                class_name=str(label),
                confidence=0.9,
                exit_stage=0,
                completed_at=time.time(),
            )
            transport.deliver(topics.results("yard"), answer.model_dump_json())
        wait_for(
            lambda: any(json.loads(p)["type"] == "end" for p in transport.on(topics.camera_events("yard")))
        )
    finally:
        camera.stop()
    state = json.loads(transport.retained[topics.camera_state("yard")])
    assert state["request_id"] == requests[-1].request_id and state["class_name"] == "3"
    events = [json.loads(p) for p in transport.on(topics.camera_events("yard"))]
    assert [e["type"] for e in events] == ["new", "end"]
    assert transport.on(topics.camera_detected("yard", "3")) == [b"ON", b"OFF"]
    snapshot = cv2.imdecode(np.frombuffer(transport.retained[topics.camera_snapshot("yard")], np.uint8), 1)
    assert snapshot.shape == (60, 80, 3)
    assert transport.on(topics.status("yard")) == [b"online", b"stopped"]
    # Home Assistant discovery of the camera, retained, naming our topics.
    discovery = [json.loads(v) for t, v in transport.retained.items() if t.startswith("homeassistant/")]
    assert len(discovery) == 1 and topics.camera_detected("yard", "3") in json.dumps(discovery[0])
    report = CameraTelemetry.model_validate_json(transport.on(topics.telemetry("yard"))[-1])
    assert (report.frames_read, report.motion_frames, report.requests_sent, report.results) == (6, 4, 4, 4)
    assert report.invalid_results == 1 and report.skipped == 0 and report.errors == 0


def test_camera_settings_reject_what_they_do_not_understand() -> None:
    for bad in (
        {"roi": [0, 0, 0, 10]},
        {"mask": [[[0, 0], [1, 1]]]},
        {"reconnect_initial_s": 10, "reconnect_max_s": 1},
        {"class_min_confidence": {"3": 1.5}},
        {"fps": 0},
        {"camera_id": "a/b"},
        {"colour": "red"},
    ):
        with pytest.raises(ValidationError):
            CameraSettings.model_validate(bad)
    for name, field in CameraSettings.model_fields.items():
        assert field.title and field.description, name
    settings = CameraSettings(min_confidence=0.5, class_min_confidence={"7": 0.9})
    assert settings.confidence_for("7") == 0.9 and settings.confidence_for("1") == 0.5


def test_a_camera_class_the_bundle_lacks_is_refused(tmp_path) -> None:
    settings = load_settings(camera={"source": str(tmp_path), "classes": ["cat"]})
    with pytest.raises(ValueError, match="'cat' is not a class of the bundle"):
        CameraService(settings, transport=MemoryTransport())


def test_the_command_reports_a_bad_source_or_roi_in_one_line(tmp_path, capsys) -> None:
    assert main(["camera", "--source", str(tmp_path / "missing.avi")]) == 2
    error = capsys.readouterr().err.strip()
    assert (
        error
        == f"distree camera: error: {tmp_path / 'missing.avi'}: no such file, folder, device or stream URL"
    )
    frames = folder_with_a_moving_square(tmp_path / "frames")
    assert main(["camera", "--source", str(frames), "--roi", "70,0,20,20"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "distree camera: error: roi [70, 0, 20, 20] does not fit the 80x60 frame"
    )


def test_the_orchestrator_ignores_camera_telemetry_but_still_reports_garbage() -> None:
    transport = MemoryTransport()
    orchestrator = OrchestratorService(load_settings(pipeline="unit"), transport=transport)
    topics = Topics(pipeline="unit")
    report = CameraTelemetry.model_validate(
        {
            name: 0
            for name, f in CameraTelemetry.model_fields.items()
            if f.annotation in (int, float, "int", "float")
        }
        | {"camera": "yard", "source": "file x"}
    )
    payload = report.model_dump_json().encode()
    assert telemetry_kind(payload) == "camera" and telemetry_kind(b'{"device": "d"}') == "stage"
    orchestrator._on_telemetry(Message(topics.telemetry("yard"), payload))
    orchestrator._on_status(Message(topics.status("yard"), b"online"))
    assert orchestrator.telemetry == {} and transport.on(topics.errors) == []
    assert orchestrator.load_estimate() is None or not any(
        "yard" in str(stage)
        for stage in orchestrator.load_estimate().stages  # type: ignore[union-attr]
    )
    orchestrator._on_telemetry(Message(topics.telemetry("junk"), b'{"kind": 5}'))
    assert len(transport.on(topics.errors)) == 1


class FlakyStream(CameraSource):
    """A live source whose stream drops after a few frames; the first reopen fails too."""

    live = True

    def __init__(self) -> None:
        self.opens = 0
        self.reads = 0
        self.script = ["frame"] * 3 + [None, None] + ["frame"] * 1000

    @property
    def description(self) -> str:
        return "stream fake"

    def open(self) -> None:
        self.opens += 1
        if self.opens == 2:
            raise SourceError("connection refused")

    def read(self) -> np.ndarray | None:
        time.sleep(0.005)
        step = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        return None if step is None else np.full((40, 40, 3), 30, np.uint8)

    def close(self) -> None:
        pass


def test_a_dropped_stream_is_reopened_with_backoff_and_health_follows_the_frames() -> None:
    source = FlakyStream()
    settings = load_settings(
        pipeline="unit",
        camera={"fps": 100, "reconnect_initial_s": 0.02, "reconnect_max_s": 0.1, "stall_timeout_s": 5},
    )
    camera = CameraService(settings, source=source, transport=MemoryTransport())
    camera.start()
    try:
        wait_for(lambda: camera.counters.snapshot()["frames_read"] > 20)
        counts = camera.counters.snapshot()
        # Two failed reads: the first starts a reconnect whose first open fails, the second open
        # works; the next read fails again and reconnects once more.
        assert counts["read_failures"] == 2 and counts["reconnects"] == 2 and source.opens == 4
        assert camera.healthy()
        camera.last_frame_monotonic -= 10  # as if no frame had come for 10 s
        assert not camera.healthy()
        assert camera.status_line().startswith("camera camera: ")
    finally:
        camera.stop()
