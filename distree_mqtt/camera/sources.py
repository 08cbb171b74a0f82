"""Where frames come from: one small interface, OpenCV capture and image folders behind it.

`open_source(text)` picks the implementation from what the text looks like: a stream URL, a
USB camera index, a V4L2 device path, a video file or a folder of images. The capture loop only
sees `CameraSource`; pacing (`FrameRateLimiter`) and reconnecting (`Backoff`) are small pure
classes beside it.
"""

from __future__ import annotations

import logging
import random
import re
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class SourceError(RuntimeError):
    """The source cannot be opened at all (bad path, unknown device): one line for the user."""


class EndOfSource(Exception):
    """A finite source (file, folder) has no more frames."""


class CameraSource(ABC):
    """Frames as uint8 BGR (H, W, 3) arrays."""

    #: Live sources deliver frames at their own pace and are never waited for; finite ones are.
    live: bool = True
    #: Frames per second the source itself runs at, when it says (files); None when unknown.
    native_fps: float | None = None

    @abstractmethod
    def open(self) -> None:
        """Open (or reopen after a failure); raises SourceError when it cannot."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame; None when the read failed (reopen with backoff); EndOfSource at the end."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def description(self) -> str:
        """What it reads, for logs (stream passwords redacted)."""


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


class OpenCvSource(CameraSource):
    """cv2.VideoCapture on a stream URL, a device index, a V4L2 path or a video file."""

    def __init__(
        self, target: str | int, kind: str, loop: bool = False, open_timeout_s: float = 10.0
    ) -> None:
        self.target = target
        self.kind = kind  # "stream", "usb", "v4l2" or "file"
        self.live = kind != "file"
        self.loop = loop
        self.open_timeout_s = open_timeout_s
        self._capture: cv2.VideoCapture | None = None

    @property
    def description(self) -> str:
        return f"{self.kind} {_redact(str(self.target))}"

    def open(self) -> None:
        self.close()
        timeout_ms = int(self.open_timeout_s * 1000)
        if self.kind == "stream":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            capture = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        elif self.kind == "usb":
            capture = cv2.VideoCapture(int(self.target))
        else:
            capture = cv2.VideoCapture(str(self.target))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.description}")
        if self.kind == "stream":
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a fresh frame matters more than every frame
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.native_fps = float(fps) if fps and 0 < fps <= 1000 else None
        self._capture = capture

    def read(self) -> np.ndarray | None:
        if self._capture is None:
            return None
        ok, frame = self._capture.read()
        if ok and frame is not None:
            return _as_bgr(frame)
        if self.kind == "file":
            if not self.loop:
                raise EndOfSource(self.description)
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._capture.read()
            if ok and frame is not None:
                return _as_bgr(frame)
        return None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageFolderSource(CameraSource):
    """The images of a folder in name order; unreadable files are skipped and counted."""

    live = False

    def __init__(self, folder: Path, loop: bool = False) -> None:
        self.folder = folder
        self.loop = loop
        self.unreadable = 0
        self._paths: list[Path] = []
        self._position = 0

    @property
    def description(self) -> str:
        return f"image folder {self.folder}"

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: not a folder")
        self._paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._paths:
            raise SourceError(f"{self.folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._position = 0

    def read(self) -> np.ndarray | None:
        for _ in range(len(self._paths)):
            if self._position >= len(self._paths):
                if not self.loop:
                    raise EndOfSource(self.description)
                self._position = 0
            path = self._paths[self._position]
            self._position += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is not None:
                return frame
            self.unreadable += 1
            log.warning("skipping %s: not a readable image", path)
        raise EndOfSource(f"{self.description}: no readable images")

    def close(self) -> None:
        self._paths = []


def open_source(text: str, loop: bool = False, open_timeout_s: float = 10.0) -> CameraSource:
    """The source `text` names (not yet opened); SourceError when it names nothing we can read."""
    text = text.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in STREAM_SCHEMES:
        return OpenCvSource(text, "stream", open_timeout_s=open_timeout_s)
    if scheme == "file":
        text = text.split("://", 1)[1]
    elif scheme:
        raise SourceError(f"unsupported source scheme {scheme!r} (use one of {', '.join(STREAM_SCHEMES)})")
    if text.isdigit():
        return OpenCvSource(int(text), "usb")
    path = Path(text).expanduser()
    if str(path).startswith("/dev/"):
        if not path.exists():
            raise SourceError(f"{path}: no such video device")
        return OpenCvSource(str(path), "v4l2")
    if path.is_dir():
        return ImageFolderSource(path, loop=loop)
    if path.is_file():
        return OpenCvSource(str(path), "file", loop=loop)
    raise SourceError(f"{text}: no such file, folder, device or stream URL")


class FrameRateLimiter:
    """Admits at most `fps` frames a second; a frame is due once per period, measured from the
    schedule rather than the last admission so the average rate holds under jitter."""

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period_s = 1.0 / fps
        self._next_due: float | None = None

    def wait_s(self, now: float) -> float:
        """Seconds until the next frame is due (0 when it already is)."""
        return 0.0 if self._next_due is None else max(0.0, self._next_due - now)

    def admit(self, now: float) -> bool:
        """True (and the next frame is scheduled) when a frame is due at `now`."""
        if self._next_due is not None and now < self._next_due:
            return False
        # After a long gap, restart the schedule instead of admitting a burst to catch up.
        if self._next_due is None or now - self._next_due > self.period_s:
            self._next_due = now + self.period_s
        else:
            self._next_due += self.period_s
        return True


class Backoff:
    """Exponential reconnect delays with jitter: initial, x multiplier, ... up to maximum."""

    def __init__(
        self,
        initial_s: float,
        maximum_s: float,
        multiplier: float = 2.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or maximum_s < initial_s or multiplier < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial <= maximum, multiplier >= 1, 0 <= jitter < 1")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.multiplier = multiplier
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        base = min(self.maximum_s, self.initial_s * self.multiplier**self.attempts)
        self.attempts += 1
        spread = base * self.jitter
        return min(self.maximum_s, max(0.0, base + self._rng.uniform(-spread, spread)))

    def reset(self) -> None:
        self.attempts = 0
