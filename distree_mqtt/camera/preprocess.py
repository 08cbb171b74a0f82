"""A camera frame into what stage 0 takes: the bundle's input size and colour, as PNG or JPEG.

The cut (ROI, or a square around the motion) is done here and resized to the spec's height and
width, so only a few hundred bytes travel; stage 0 decodes it and applies the spec's
normalisation (`distree_mqtt.wire.images.preprocess`), exactly as for any other client.
"""

from __future__ import annotations

import cv2
import numpy as np

from distree_mqtt.camera.motion import Box
from distree_mqtt.model.input_spec import InputSpec
from distree_mqtt.wire.images import encode_image


def crop_box(motion: Box | None, roi: Box, margin: float) -> Box:
    """The square (where it fits) around `motion`, `margin` wider than its longer side and kept
    inside the ROI; the ROI itself without motion."""
    if motion is None:
        return roi
    side = max(motion.width, motion.height) * (1.0 + margin)
    width = round(min(side, roi.width))
    height = round(min(side, roi.height))
    centre_x = motion.x + motion.width / 2.0
    centre_y = motion.y + motion.height / 2.0
    x = round(centre_x - width / 2.0)
    y = round(centre_y - height / 2.0)
    x = min(max(x, roi.x), roi.x + roi.width - width)
    y = min(max(y, roi.y), roi.y + roi.height - height)
    return Box(x, y, max(1, width), max(1, height))


def prepare_input(frame: np.ndarray, box: Box, spec: InputSpec, invert: bool = False) -> np.ndarray:
    """BGR (H, W, 3) uint8 frame -> uint8 image of the spec's size: (h, w) grey or (h, w, 3) BGR."""
    _, height, width = spec.shape
    region = frame[box.y : box.y + box.height, box.x : box.x + box.width]
    if region.size == 0:
        raise ValueError(f"crop {box.as_list()} is empty in a {frame.shape[1]}x{frame.shape[0]} frame")
    if spec.color == "gray":
        region = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    elif region.ndim == 2:
        region = cv2.cvtColor(region, cv2.COLOR_GRAY2BGR)
    if invert:
        region = 255 - region
    if region.shape[:2] != (height, width):
        region = cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(region)


def encode_input(image: np.ndarray, codec: str) -> bytes:
    payload, _ = encode_image(image, codec)
    return payload
