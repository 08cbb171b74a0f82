"""The motion gate: the network runs only when enough of the watched area changes.

Two detectors behind one interface (frame differencing, MOG2 background subtraction) give a
foreground mask; `MotionGate` restricts it to the region of interest less the mask polygons,
measures the changed fraction and the moving region's box. `TriggerPolicy` (pure) turns motion
and the clock into "run the network now" with a cooldown and an optional periodic keyframe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

TriggerKind = Literal["motion", "keyframe"]


@dataclass(frozen=True)
class Box:
    """A rectangle in full-frame pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


@dataclass(frozen=True)
class MotionReading:
    changed_fraction: float
    moving: bool
    box: Box | None  # bounding box of the changed pixels, None without motion


class MotionDetector(ABC):
    """Grey frame in, foreground mask (uint8, 0 or 255, same size) out."""

    @abstractmethod
    def foreground(self, gray: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def reset(self) -> None:
        """Forget the past (after a reconnect the scene may have changed)."""


class FrameDifference(MotionDetector):
    """Pixels whose blurred grey level changed by at least `threshold` since the previous frame."""

    def __init__(self, threshold: int = 25) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def foreground(self, gray: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(gray, (5, 5), 0)
        previous, self._previous = self._previous, blurred
        if previous is None or previous.shape != blurred.shape:
            return np.zeros_like(gray)
        _, mask = cv2.threshold(cv2.absdiff(blurred, previous), self.threshold - 1, 255, cv2.THRESH_BINARY)
        return mask

    def reset(self) -> None:
        self._previous = None


class BackgroundSubtraction(MotionDetector):
    """OpenCV MOG2; a still object melts into the background after about `history_frames`."""

    def __init__(self, history_frames: int = 100, var_threshold: float = 32.0) -> None:
        self.history_frames = max(2, history_frames)
        self.var_threshold = var_threshold
        self._first = True
        self._subtractor = self._new_subtractor()

    def foreground(self, gray: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(gray, (5, 5), 0)
        if self._first:
            self._first = False
            self._subtractor.apply(blurred, learningRate=1.0)  # the first frame is the background
            return np.zeros_like(gray)
        mask = self._subtractor.apply(blurred)
        _, mask = cv2.threshold(mask, 127, 255, cv2.THRESH_BINARY)
        return mask

    def reset(self) -> None:
        self._subtractor = self._new_subtractor()
        self._first = True

    def _new_subtractor(self) -> cv2.BackgroundSubtractorMOG2:
        return cv2.createBackgroundSubtractorMOG2(
            history=self.history_frames, varThreshold=self.var_threshold, detectShadows=False
        )


class AlwaysMoving(MotionDetector):
    """No gate: every frame counts as motion (the rate limits still apply)."""

    def foreground(self, gray: np.ndarray) -> np.ndarray:
        return np.full_like(gray, 255)

    def reset(self) -> None:
        pass


def make_detector(method: str, threshold: int = 25, history_frames: int = 100) -> MotionDetector:
    if method == "diff":
        return FrameDifference(threshold)
    if method == "mog2":
        return BackgroundSubtraction(history_frames)
    if method == "none":
        return AlwaysMoving()
    raise ValueError(f"unknown motion method {method!r} (diff, mog2, none)")


def check_region(
    frame_width: int,
    frame_height: int,
    roi: Sequence[int] | None,
    mask: Sequence[Sequence[Sequence[int]]] = (),
) -> Box:
    """The ROI as a Box inside the frame (the whole frame without one); ValueError when the ROI
    or a mask polygon lies outside the frame."""
    x, y, width, height = (0, 0, frame_width, frame_height) if roi is None else (int(v) for v in roi)
    if x < 0 or y < 0 or width < 1 or height < 1 or x + width > frame_width or y + height > frame_height:
        raise ValueError(
            f"roi [{x}, {y}, {width}, {height}] does not fit the {frame_width}x{frame_height} frame"
        )
    for polygon in mask:
        for point in polygon:
            if not (0 <= point[0] <= frame_width and 0 <= point[1] <= frame_height):
                raise ValueError(
                    f"mask point {list(point)} lies outside the {frame_width}x{frame_height} frame"
                )
    return Box(x, y, width, height)


class MotionGate:
    """Where and how much the watched part of the picture changed."""

    def __init__(
        self,
        detector: MotionDetector,
        frame_width: int,
        frame_height: int,
        roi: Sequence[int] | None = None,
        mask: Sequence[Sequence[Sequence[int]]] = (),
        min_area_fraction: float = 0.002,
        process_width: int = 320,
    ) -> None:
        self.detector = detector
        self.frame_size = (frame_width, frame_height)
        self.roi = check_region(frame_width, frame_height, roi, mask)
        self.min_area_fraction = min_area_fraction
        self.scale = min(1.0, process_width / frame_width)
        small = (max(1, round(frame_width * self.scale)), max(1, round(frame_height * self.scale)))
        self._small_size = small
        watch = np.zeros((small[1], small[0]), dtype=np.uint8)
        x0, y0 = int(self.roi.x * self.scale), int(self.roi.y * self.scale)
        x1 = max(x0 + 1, round((self.roi.x + self.roi.width) * self.scale))
        y1 = max(y0 + 1, round((self.roi.y + self.roi.height) * self.scale))
        watch[y0:y1, x0:x1] = 255
        for polygon in mask:
            points = np.round(np.asarray(polygon, dtype=np.float64) * self.scale).astype(np.int32)
            cv2.fillPoly(watch, [points], 0)
        self._watch = watch
        self.watched_pixels = int(cv2.countNonZero(watch))
        if self.watched_pixels == 0:
            raise ValueError("the mask covers the whole region of interest: nothing left to watch")
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def observe(self, frame: np.ndarray) -> MotionReading:
        height, width = frame.shape[:2]
        if (width, height) != self.frame_size:
            raise ValueError(f"frame size changed from {self.frame_size} to {(width, height)}")
        small = (
            frame if self.scale == 1.0 else cv2.resize(frame, self._small_size, interpolation=cv2.INTER_AREA)
        )
        gray = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        foreground = cv2.bitwise_and(self.detector.foreground(gray), self._watch)
        # Opening drops isolated noise pixels; what survives is a changed region.
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, self._kernel)
        changed = int(cv2.countNonZero(foreground))
        fraction = changed / self.watched_pixels
        moving = changed > 0 and fraction >= self.min_area_fraction
        box = None
        if moving:
            x, y, w, h = cv2.boundingRect(cv2.findNonZero(foreground))
            box = Box(
                int(x / self.scale),
                int(y / self.scale),
                max(1, round(w / self.scale)),
                max(1, round(h / self.scale)),
            )
        return MotionReading(changed_fraction=fraction, moving=moving, box=box)

    def reset(self) -> None:
        self.detector.reset()


class TriggerPolicy:
    """Motion triggers at most once per cooldown; a keyframe fires on the first frame and whenever
    nothing has triggered for `keyframe_interval_s` (0: never)."""

    def __init__(self, cooldown_s: float = 0.0, keyframe_interval_s: float = 0.0) -> None:
        self.cooldown_s = cooldown_s
        self.keyframe_interval_s = keyframe_interval_s
        self._last_motion: float | None = None
        self._last_trigger: float | None = None

    def decide(self, now: float, moving: bool) -> TriggerKind | None:
        if moving and (self._last_motion is None or now - self._last_motion >= self.cooldown_s):
            self._last_motion = self._last_trigger = now
            return "motion"
        if self.keyframe_interval_s > 0 and (
            self._last_trigger is None or now - self._last_trigger >= self.keyframe_interval_s
        ):
            self._last_trigger = now  # the first frame is a keyframe: a state soon after start
            return "keyframe"
        return None
