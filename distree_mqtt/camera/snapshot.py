"""Annotated JPEG snapshots: the frame, the watched region, the network's cut and its answer."""

from __future__ import annotations

import time

import cv2
import numpy as np

from distree_mqtt.camera.motion import Box

_ROI_COLOUR = (255, 160, 0)  # BGR
_CUT_COLOUR = (0, 220, 0)
_DEGRADED_COLOUR = (0, 170, 255)
_TEXT_COLOUR = (255, 255, 255)


def annotate(
    frame: np.ndarray,
    cut: Box | None,
    roi: Box | None,
    caption: str,
    at: float | None = None,
    degraded: bool = False,
) -> np.ndarray:
    """A copy of `frame` with the ROI, the cut the network saw, the caption and the time."""
    image = frame.copy()
    height, width = image.shape[:2]
    thickness = max(1, round(width / 400))
    scale = max(0.35, width / 900)
    if roi is not None and (roi.width, roi.height) != (width, height):
        cv2.rectangle(image, (roi.x, roi.y), (roi.x + roi.width - 1, roi.y + roi.height - 1), _ROI_COLOUR, 1)
    colour = _DEGRADED_COLOUR if degraded else _CUT_COLOUR
    if cut is not None:
        cv2.rectangle(
            image, (cut.x, cut.y), (cut.x + cut.width - 1, cut.y + cut.height - 1), colour, thickness
        )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if at is None else at))
    for row, text in enumerate((caption, stamp)):
        (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = 2 + row * (text_height + baseline + 4)
        cv2.rectangle(image, (0, top), (text_width + 4, top + text_height + baseline + 2), (0, 0, 0), -1)
        cv2.putText(
            image,
            text,
            (2, top + text_height + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            colour if row == 0 else _TEXT_COLOUR,
            1,
            cv2.LINE_AA,
        )
    return image


def encode_jpeg(image: np.ndarray, quality: int = 85, max_width: int = 640) -> bytes:
    height, width = image.shape[:2]
    if width > max_width:
        image = cv2.resize(
            image, (max_width, max(1, round(height * max_width / width))), interpolation=cv2.INTER_AREA
        )
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the snapshot as JPEG")
    return buffer.tobytes()
