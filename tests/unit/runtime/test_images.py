from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from distree_mqtt.wire.images import ImageError, decode_image, encode_image, image_dimensions


@pytest.mark.parametrize("codec", ["png", "jpeg", "raw"])
def test_round_trip_keeps_size_and_channels(codec) -> None:
    image = np.random.default_rng(0).integers(0, 255, (31, 45, 3), dtype=np.uint8)
    payload, shape = encode_image(image, codec)
    decoded = decode_image(payload, codec, shape)
    assert decoded.shape == (31, 45, 3)
    if codec != "jpeg":
        assert np.array_equal(decoded, image)


def _png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 32


def test_decompression_bombs_are_refused_from_the_header() -> None:
    with pytest.raises(ImageError, match=r"outside 1\.\.16777216 pixels"):
        decode_image(_png_header_claiming(100_000, 100_000), "png", [])
    _, jpeg = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))
    assert image_dimensions(jpeg.tobytes(), "jpeg") == (8, 8)
    with pytest.raises(ImageError, match="over the"):
        decode_image(b"\x00" * 10, "raw", [50_000, 50_000, 1])


@pytest.mark.parametrize(
    ("payload", "codec"), [(b"garbage", "png"), (b"\xff\xd8\xff", "jpeg"), (b"\x00" * 5, "raw"), (b"", "gif")]
)
def test_garbage_images_are_clear_errors(payload, codec) -> None:
    with pytest.raises(ImageError):
        decode_image(payload, codec, [2, 2, 1])
