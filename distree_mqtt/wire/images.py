"""Images into stage 0: JPEG, PNG or raw uint8 frames, checked before they are decoded.

The pixel count is read from the PNG/JPEG header first, so an image that would decompress to
gigabytes is refused before OpenCV allocates anything.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import torch

from distree_mqtt.model.input_spec import InputSpec

MAX_PIXELS = 4096 * 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    pass


def image_codec_of(data: bytes) -> str | None:
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    return None


def image_dimensions(data: bytes, codec: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    if codec == "png":
        if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
            raise ImageError("not a PNG image")
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if codec == "jpeg":
        if not data.startswith(b"\xff\xd8"):
            raise ImageError("not a JPEG image")
        offset = 2
        while offset + 4 <= len(data):
            if data[offset] != 0xFF:
                raise ImageError("corrupt JPEG marker stream")
            marker = data[offset + 1]
            if marker == 0xFF:  # fill byte
                offset += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                offset += 2
                continue
            (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
            if marker in _JPEG_FRAME_MARKERS:
                if offset + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
                return int(width), int(height)
            if length < 2:
                raise ImageError("corrupt JPEG segment length")
            offset += 2 + length
        raise ImageError("JPEG image has no frame header")
    raise ImageError(f"unknown image codec {codec!r}")


def encode_image(image: np.ndarray, codec: str, jpeg_quality: int = 90) -> tuple[bytes, list[int]]:
    """uint8 (H, W) or (H, W, C) image -> (payload, shape [H, W, C])."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ImageError(f"images must be uint8 (H, W) or (H, W, C), got {image.dtype} {image.shape}")
    shape = [image.shape[0], image.shape[1], 1 if image.ndim == 2 else image.shape[2]]
    if codec == "raw":
        return np.ascontiguousarray(image).tobytes(), shape
    extension = {"png": ".png", "jpeg": ".jpg"}.get(codec)
    if extension is None:
        raise ImageError(f"unknown image codec {codec!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if codec == "jpeg" else []
    ok, buffer = cv2.imencode(extension, image, params)
    if not ok:
        raise ImageError(f"could not encode the image as {codec}")
    return buffer.tobytes(), shape


def decode_image(payload: bytes, codec: str, shape: list[int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Payload -> uint8 (H, W, C) with C in {1, 3}; colour images come back in BGR order."""
    if codec == "raw":
        if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
            raise ImageError(f"raw frames need shape [H, W, 1 or 3], got {shape}")
        if shape[0] * shape[1] > max_pixels:
            raise ImageError(f"image is {shape[1]}x{shape[0]}, over the {max_pixels}-pixel limit")
        if len(payload) != shape[0] * shape[1] * shape[2]:
            raise ImageError(
                f"raw frame is {len(payload)} bytes, shape {shape} needs {shape[0] * shape[1] * shape[2]}"
            )
        return np.frombuffer(payload, dtype=np.uint8).reshape(shape).copy()
    width, height = image_dimensions(payload, codec)
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ImageError(f"image is {width}x{height}, outside 1..{max_pixels} pixels")
    decoded = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageError(f"{codec} image could not be decoded")
    if decoded.dtype != np.uint8:
        decoded = (decoded / 257).astype(np.uint8) if decoded.dtype == np.uint16 else decoded.astype(np.uint8)
    if decoded.ndim == 2:
        decoded = decoded[:, :, None]
    elif decoded.shape[2] == 4:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2BGR)
    return decoded


def preprocess(image: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """uint8 (H, W, C) BGR/gray -> normalised float (C, H, W) as the bundle's stage 0 expects."""
    channels, height, width = spec.shape
    if spec.color == "gray":
        converted = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    else:
        converted = (
            cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
            if image.shape[2] == 1
            else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        )
    if converted.shape[:2] != (height, width):
        converted = cv2.resize(converted, (width, height), interpolation=cv2.INTER_AREA)
    array = converted.reshape(height, width, channels).transpose(2, 0, 1)
    return spec.normalise(torch.from_numpy(np.ascontiguousarray(array))[None])[0]
