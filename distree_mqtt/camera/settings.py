"""Settings of one camera service (`distree camera`): the `camera` section of DistreeSettings.

Pixel coordinates (ROI, mask polygons) are in the source's frame, before any downscaling; they are
checked against the first frame's size when the service starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distree_mqtt.reference import BundlePath


class CameraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # -- source -----------------------------------------------------------------------------
    camera_id: str = Field(
        "camera",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        title="Camera id",
        description="Topic level of this camera: camera/<id>/..., status/<id>, telemetry/<id>.",
    )
    source: str = Field(
        "0",
        min_length=1,
        max_length=2048,
        title="Frame source",
        description="rtsp://, http(s):// stream URL; a USB camera index (0); a V4L2 device path "
        "(/dev/video0); a video file; or a folder of images (played in name order).",
    )
    fps: float = Field(
        5.0,
        gt=0,
        le=120,
        title="Detect frame rate",
        description="At most this many frames per second go through the motion gate; the rest are read "
        "and dropped (live sources) so the gate always sees a fresh frame.",
    )
    realtime: bool = Field(
        True,
        title="Play files in real time",
        description="Video files and image folders are paced to their own rate (folders: `fps`); off, "
        "they are read as fast as the rate limit allows.",
    )
    loop: bool = Field(
        False,
        title="Loop finite sources",
        description="Start a video file or image folder again at its end; otherwise the service stops.",
    )
    reconnect_initial_s: float = Field(
        0.5, gt=0, le=600, title="First reconnect delay", description="Delay after a stream drops."
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, le=3600, title="Longest reconnect delay", description="The delay doubles up to this."
    )
    open_timeout_s: float = Field(
        10.0, gt=0, le=600, title="Stream open/read timeout", description="Given to OpenCV's FFmpeg backend."
    )
    stall_timeout_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        title="Unhealthy after",
        description="No frame for this long withholds the systemd watchdog ping (the unit restarts).",
    )

    # -- motion gate ------------------------------------------------------------------------
    motion_method: Literal["diff", "mog2", "none"] = Field(
        "diff",
        title="Motion detector",
        description="diff: frame differencing; mog2: OpenCV background subtraction; none: every frame "
        "triggers (rate limits still apply).",
    )
    motion_threshold: int = Field(
        25, ge=1, le=255, title="Pixel change threshold", description="diff: grey-level change that counts."
    )
    mog2_history_s: float = Field(
        3.0,
        gt=0,
        le=3600,
        title="Background memory",
        description="mog2: a still object becomes background after about this long.",
    )
    min_area_fraction: float = Field(
        0.002,
        ge=0,
        le=1,
        title="Minimum changed area",
        description="Fraction of the watched area (ROI less mask) that must change to count as motion.",
    )
    process_width: int = Field(
        320,
        ge=32,
        le=4096,
        title="Motion analysis width",
        description="Frames wider than this are downscaled for the motion gate only.",
    )
    roi: tuple[int, int, int, int] | None = Field(
        None,
        title="Region of interest",
        description="[x, y, width, height] in pixels: motion is looked for, and inputs cut, only here.",
    )
    mask: list[list[tuple[int, int]]] = Field(
        default_factory=list,
        max_length=64,
        title="Motion mask",
        description="Polygons [[x, y], ...] in pixels whose pixels never count as motion (timestamps, trees).",
    )
    cooldown_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        title="Trigger cooldown",
        description="After a motion trigger, further motion is ignored this long (0: every motion frame).",
    )
    keyframe_interval_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        title="Periodic keyframe",
        description="Run the network on a frame this often even without motion (0: never).",
    )

    # -- network input ----------------------------------------------------------------------
    crop: Literal["motion", "roi"] = Field(
        "motion",
        title="What the network sees",
        description="motion: a square around the moving region (whole ROI for keyframes); roi: the ROI "
        "(or whole frame).",
    )
    crop_margin: float = Field(
        0.4,
        ge=0,
        le=4,
        title="Motion crop margin",
        description="The square's side is the motion box's longer side x (1 + margin).",
    )
    invert: bool = Field(
        False,
        title="Invert grey levels",
        description="For models trained on bright objects on dark backgrounds (MNIST) watching the opposite.",
    )
    image_codec: Literal["png", "jpeg"] = Field(
        "png", title="Encoding of inputs to stage 0", description="The cut is already at the input size."
    )

    # -- pipeline ---------------------------------------------------------------------------
    bundle: BundlePath = Field(
        None,
        title="Bundle the pipeline runs",
        description="For its input spec, class names and model hash; `reference:<name>` names a "
        "shipped bundle (default: reference:mnist).",
    )
    deadline_ms: float = Field(
        1000.0, gt=0, le=600_000, title="Request deadline", description="Per frame sent to stage 0."
    )
    max_in_flight: int = Field(
        2,
        ge=1,
        le=1000,
        title="Requests in flight",
        description="At this many unanswered requests, triggered frames are dropped and counted "
        "(skipped_fps), never queued.",
    )

    # -- detections and events --------------------------------------------------------------
    classes: list[str] | None = Field(
        None,
        title="Classes to track",
        description="Class names that raise events and ON/OFF topics (default: every class of the bundle).",
    )
    min_confidence: float = Field(
        0.6, ge=0, le=1, title="Minimum confidence", description="Results below it are not detections."
    )
    class_min_confidence: dict[str, float] = Field(
        default_factory=dict,
        title="Per-class minimum confidence",
        description="Overrides min_confidence for the named classes (Frigate's per-object min_score).",
    )
    min_hits: int = Field(
        2,
        ge=1,
        le=1000,
        title="Debounce",
        description="A detection starts (event `new`, ON) after this many confident results of its class.",
    )
    hit_window_s: float = Field(
        3.0,
        gt=0,
        le=3600,
        title="Debounce window",
        description="The min_hits results must fall within this many seconds.",
    )
    end_after_s: float = Field(
        2.0,
        gt=0,
        le=86_400,
        title="End after",
        description="A detection ends (event `end`, OFF) when its class was not seen for this long.",
    )
    snapshot: Literal["detections", "results", "off"] = Field(
        "detections",
        title="Snapshots",
        description="detections: when a detection starts or its best score improves; results: every "
        "result; off: never.",
    )
    snapshot_quality: int = Field(
        85, ge=10, le=100, title="Snapshot JPEG quality", description="cv2 JPEG quality, 10 to 100."
    )
    snapshot_max_width: int = Field(
        640, ge=64, le=8192, title="Snapshot width", description="Wider frames are scaled down."
    )
    telemetry_interval_s: float = Field(
        1.0, gt=0, le=3600, title="Telemetry interval", description="Seconds between telemetry/<id> reports."
    )

    @field_validator("roi")
    @classmethod
    def _check_roi(cls, roi: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if roi is not None and (roi[0] < 0 or roi[1] < 0 or roi[2] < 1 or roi[3] < 1):
            raise ValueError(f"roi must be [x >= 0, y >= 0, width >= 1, height >= 1], got {list(roi)}")
        return roi

    @field_validator("mask")
    @classmethod
    def _check_mask(cls, mask: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
        for polygon in mask:
            if len(polygon) < 3:
                raise ValueError(f"a mask polygon needs at least 3 points, got {len(polygon)}")
        return mask

    @field_validator("class_min_confidence")
    @classmethod
    def _check_scores(cls, scores: dict[str, float]) -> dict[str, float]:
        for name, score in scores.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"class_min_confidence[{name!r}] must be within 0..1, got {score}")
        return scores

    @model_validator(mode="after")
    def _check_backoff(self) -> CameraSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        return self

    def confidence_for(self, class_name: str) -> float:
        return self.class_min_confidence.get(class_name, self.min_confidence)
