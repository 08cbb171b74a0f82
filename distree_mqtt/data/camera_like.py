"""A deterministic "camera-like" variant of digit images.

Real cameras do not deliver centred, clean digits: framing shifts and scales, backgrounds
carry clutter, sensors add noise. Each sample draws a difficulty in [0, 1] that scales all of
these at once, so the variant holds easy and hard inputs side by side, the premise of early
exits. The same (seed, index) always yields the same image.
"""

from __future__ import annotations

import cv2
import numpy as np


def camera_like(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (distorted uint8 images of the same shape, difficulty per image).

    `images` is (N, H, W) uint8 grayscale, bright strokes on a dark background.
    """
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"camera_like expects (N, H, W) uint8 images, got {images.dtype} {images.shape}")
    count, height, width = images.shape
    output = np.empty_like(images)
    difficulty = np.empty(count, dtype=np.float32)
    for index in range(count):
        rng = np.random.default_rng((seed, index))
        level = float(rng.uniform(0.0, 1.0))
        difficulty[index] = level
        output[index] = _distort(images[index], images[int(rng.integers(count))], level, rng, height, width)
    return output, difficulty


def _distort(
    image: np.ndarray, other: np.ndarray, level: float, rng: np.random.Generator, height: int, width: int
) -> np.ndarray:
    # Framing: scale, rotate and shift the digit.
    scale = float(rng.uniform(1.0 - 0.35 * level, 1.0 + 0.1 * level))
    angle = float(rng.uniform(-25.0, 25.0) * level)
    shift_limit = 1.0 + 5.0 * level
    shift_x, shift_y = rng.uniform(-shift_limit, shift_limit, size=2)
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
    matrix[:, 2] += (shift_x, shift_y)
    canvas = cv2.warpAffine(image.astype(np.float32), matrix, (width, height), borderValue=0.0)

    # Clutter: line segments and a faint, offset fragment of another digit.
    for _ in range(int(rng.poisson(3.0 * level))):
        start = tuple(int(v) for v in rng.integers(0, (width, height)))
        end = tuple(int(v) for v in rng.integers(0, (width, height)))
        cv2.line(canvas, start, end, float(rng.uniform(60, 200) * level), int(rng.integers(1, 3)))
    if rng.uniform() < level * 0.8:
        offset = rng.integers(-width // 2, width // 2 + 1, size=2)
        fragment = np.roll(other.astype(np.float32), tuple(int(v) for v in offset), axis=(0, 1))
        canvas = np.maximum(canvas, fragment * float(rng.uniform(0.15, 0.45) * level))

    # Sensor: contrast and brightness, blur, noise.
    contrast = float(rng.uniform(1.0 - 0.5 * level, 1.0))
    background = float(rng.uniform(0.0, 70.0 * level))
    canvas = background + contrast * canvas
    if rng.uniform() < level:
        canvas = cv2.GaussianBlur(canvas, (3, 3), float(rng.uniform(0.3, 1.0)))
    canvas += rng.normal(0.0, 3.0 + 35.0 * level, size=canvas.shape)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
