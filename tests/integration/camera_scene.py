"""A real video for the camera tests: MNIST digits sliding over a noisy background, with still
periods between the moves, written with cv2.VideoWriter (MJPG in AVI, which every OpenCV build
with its bundled FFmpeg writes and reads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 160, 120
DIGIT_SIZE = 56


@dataclass(frozen=True)
class Segment:
    digit_index: int | None  # index into the test set; None: empty scene
    label: int | None
    moving: bool
    frames: int
    start: tuple[int, int] = (0, 0)  # top-left of the digit when the segment starts
    step: tuple[int, int] = (0, 0)  # pixels per frame while moving


@dataclass(frozen=True)
class Scene:
    path: Path
    fps: float
    segments: list[Segment]
    frame_labels: list[int | None]  # digit shown in each frame
    frame_moving: list[bool]  # the digit moved since the previous frame


def write_scene(
    path: Path, images: np.ndarray, labels: np.ndarray, plan: list[Segment], fps: float = 20.0
) -> Scene:
    """`images` (N, 28, 28) uint8 bright-on-dark digits."""
    rng = np.random.default_rng(7)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError("this OpenCV cannot write MJPG/AVI")
    frame_labels: list[int | None] = []
    frame_moving: list[bool] = []
    segments: list[Segment] = []
    previous_position: tuple[int, int] | None = None
    previous_digit: int | None = None
    try:
        for segment in plan:
            digit = None
            if segment.digit_index is not None:
                digit = cv2.resize(
                    images[segment.digit_index], (DIGIT_SIZE, DIGIT_SIZE), interpolation=cv2.INTER_LINEAR
                )
            label = None if segment.digit_index is None else int(labels[segment.digit_index])
            segments.append(
                Segment(
                    segment.digit_index, label, segment.moving, segment.frames, segment.start, segment.step
                )
            )
            for index in range(segment.frames):
                frame = np.clip(rng.normal(24.0, 5.0, size=(HEIGHT, WIDTH)), 0, 255).astype(np.uint8)
                position = None
                if digit is not None:
                    offset = index if segment.moving else 0
                    position = (
                        segment.start[0] + offset * segment.step[0],
                        segment.start[1] + offset * segment.step[1],
                    )
                    x, y = position
                    region = frame[y : y + DIGIT_SIZE, x : x + DIGIT_SIZE]
                    np.maximum(region, digit, out=region)
                writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
                frame_labels.append(label)
                frame_moving.append(position != previous_position or segment.digit_index != previous_digit)
                previous_position, previous_digit = position, segment.digit_index
    finally:
        writer.release()
    return Scene(path, fps, segments, frame_labels, frame_moving)


def first_of_each_label(labels: np.ndarray, wanted: list[int]) -> list[int]:
    return [int(np.flatnonzero(labels == label)[0]) for label in wanted]
