"""JSON payloads a camera service publishes (see docs/protocol.md, "Camera topics").

Field names are a contract: Home Assistant templates read them. Add fields, never rename.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CameraState(BaseModel):
    """Retained on camera/<id>/state after every answered request."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    label: int | None = Field(title="Class index of the answer")
    class_name: str | None = Field(title="Class name of the answer")
    confidence: float | None = Field(title="Calibrated confidence of the exit that answered")
    exit_stage: int | None = Field(title="Stage whose exit answered")
    request_id: str
    at: float = Field(title="When the answer was made (unix seconds)")
    degraded: bool = Field(False, title="Answered early because of a deadline or a missing stage")
    trigger: Literal["motion", "keyframe"] = Field("motion", title="Why this frame was sent")
    latency_ms: float | None = Field(None, title="Frame sent to answer received")
    box: list[int] | None = Field(None, title="[x, y, width, height] of the cut the network saw (pixels)")


class CameraTelemetry(BaseModel):
    """On telemetry/<id> every `telemetry_interval_s`; `kind` tells stage consumers to skip it.
    Counters are totals since start; `*_fps` are rates over the last interval."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    kind: Literal["camera"] = "camera"
    camera: str
    timestamp: float = Field(ge=0)
    interval_s: float = Field(ge=0)
    source: str = Field(title="What is read (stream passwords redacted)")
    frames_read: int = Field(ge=0)
    fps: float = Field(ge=0, title="Frames read per second")
    detect_fps: float = Field(ge=0, title="Frames through the motion gate per second")
    motion_frames: int = Field(ge=0, title="Frames with motion")
    motion_fps: float = Field(ge=0)
    keyframes: int = Field(ge=0)
    cooldown_frames: int = Field(ge=0, title="Motion frames ignored during the cooldown")
    requests_sent: int = Field(ge=0)
    requests_fps: float = Field(ge=0)
    in_flight: int = Field(ge=0)
    results: int = Field(ge=0, title="Answered requests (results and degraded results)")
    degraded: int = Field(ge=0)
    timeouts: int = Field(ge=0)
    rejected: int = Field(ge=0)
    invalid_results: int = Field(ge=0, title="Payloads on our results topic that were not a Result")
    skipped: int = Field(ge=0, title="Triggered frames dropped because max_in_flight were unanswered")
    skipped_fps: float = Field(ge=0)
    reconnects: int = Field(ge=0)
    read_failures: int = Field(ge=0)
    errors: int = Field(ge=0)
    events: int = Field(ge=0)
    snapshots: int = Field(ge=0)
    latency_p50_ms: float = Field(ge=0, title="Frame sent to answer, recent median")
    active: list[str] = Field(default_factory=list, title="Classes detected now")
