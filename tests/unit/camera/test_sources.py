"""Source selection, finite sources, the frame-rate limiter and the reconnect backoff."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from distree_mqtt.camera.sources import (
    Backoff,
    EndOfSource,
    FrameRateLimiter,
    ImageFolderSource,
    OpenCvSource,
    SourceError,
    open_source,
)


def write_video(path: Path, frames: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for index in range(frames):
        writer.write(np.full((48, 64, 3), index * 30, np.uint8))
    writer.release()
    return path


def test_sources_are_chosen_by_what_the_text_looks_like(tmp_path: Path) -> None:
    stream = open_source("rtsp://user:secret@cam.lan:554/stream1")
    assert isinstance(stream, OpenCvSource) and stream.kind == "stream" and stream.live
    assert "secret" not in stream.description and "user:***@" in stream.description
    assert open_source("http://cam.lan/video.mjpg").kind == "stream"  # type: ignore[attr-defined]
    usb = open_source("0")
    assert isinstance(usb, OpenCvSource) and usb.kind == "usb" and usb.target == 0
    assert isinstance(open_source(str(tmp_path)), ImageFolderSource)
    video = open_source(str(write_video(tmp_path / "clip.avi")))
    assert isinstance(video, OpenCvSource) and video.kind == "file" and not video.live
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="no such video device"):
        open_source("/dev/video-missing-42")
    with pytest.raises(SourceError, match="unsupported source scheme"):
        open_source("gopher://cam")


def test_a_video_file_ends_or_loops(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi")
    once = open_source(str(path))
    once.open()
    assert once.native_fps == pytest.approx(10)
    frames = []
    with pytest.raises(EndOfSource):
        while True:
            frame = once.read()
            assert frame is not None
            frames.append(frame)
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    looping = open_source(str(path), loop=True)
    looping.open()
    assert all(looping.read() is not None for _ in range(15))
    looping.close()
    assert looping.read() is None  # closed: a read failure, which the service answers by reconnecting


def test_a_file_opencv_cannot_read_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    source = open_source(str(path))
    with pytest.raises(SourceError, match="cannot open file"):
        source.open()


def test_an_image_folder_skips_unreadable_files_and_ends(tmp_path: Path) -> None:
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"{index}.png"), np.full((10, 12), index * 50, np.uint8))
    (tmp_path / "1b.jpg").write_bytes(b"garbage")
    (tmp_path / "readme.txt").write_text("ignored")
    source = open_source(str(tmp_path))
    source.open()
    grey_levels = []
    with pytest.raises(EndOfSource):
        while True:
            frame = source.read()
            assert frame is not None and frame.shape == (10, 12, 3)
            grey_levels.append(int(frame[0, 0, 0]))
    assert grey_levels == [0, 50, 100]
    assert isinstance(source, ImageFolderSource) and source.unreadable == 1
    with pytest.raises(SourceError, match="no images"):
        empty = tmp_path / "empty"
        empty.mkdir()
        open_source(str(empty)).open()


def test_the_rate_limiter_admits_one_frame_per_period_without_bursts() -> None:
    limiter = FrameRateLimiter(fps=10)
    times = [i * 0.025 for i in range(40)]  # a 40 fps camera for one second
    admitted = [t for t in times if limiter.admit(t)]
    assert len(admitted) == 10 and admitted[:3] == [0.0, 0.1, 0.2]
    assert limiter.wait_s(0.95) == pytest.approx(0.05) and limiter.wait_s(1.2) == 0.0
    # After a long pause the schedule restarts instead of catching up with a burst.
    assert limiter.admit(5.0) and not limiter.admit(5.05) and limiter.admit(5.1)
    with pytest.raises(ValueError):
        FrameRateLimiter(0)


def test_backoff_doubles_to_its_cap_with_bounded_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, jitter=0.0)
    assert [backoff.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay_s() == 0.5
    jittered = Backoff(1.0, 8.0, jitter=0.2, rng=random.Random(3))
    delays = [jittered.next_delay_s() for _ in range(5)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8], strict=True):
        assert 0.8 * base <= delay <= min(8.0, 1.2 * base)
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
