"""The stage-input envelope (wire format version 1, docs/protocol.md) for an encoded image.

Written out here in plain Python: Home Assistant installs only this component, never the
distree_mqtt package (nor numpy or torch). The Home Assistant tests decode what this module
builds with distree_mqtt's own decoder, so the two cannot drift apart unnoticed.

    offset  size  field
    0       4     magic b"DTRE"
    4       1     version (1)
    5       4     header length H, unsigned big-endian
    9       H     header: UTF-8 JSON
    9+H     P     payload: the JPEG or PNG file
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

MAGIC = b"DTRE"
VERSION = 1
MAX_HEADER_BYTES = 16 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers that carry the image size (not DHT 0xC4, JPG 0xC8, DAC 0xCC).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageFormatError(ValueError):
    """Bytes that are not a PNG or JPEG image whose size can be read."""


def image_codec(data: bytes) -> str:
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    raise ImageFormatError("the image is neither JPEG nor PNG")


def image_size(data: bytes, codec: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    if codec == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageFormatError("PNG image without a header")
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise ImageFormatError("corrupt JPEG marker stream")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker in _JPEG_FRAME_MARKERS and offset + 9 <= len(data):
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        if length < 2:
            raise ImageFormatError("corrupt JPEG segment length")
        offset += 2 + length
    raise ImageFormatError("JPEG image without a frame header")


def build_image_envelope(
    image: bytes,
    *,
    request_id: str,
    source: str,
    model_hash: str,
    created_at: float,
    deadline: float,
    reply_to: str | None = None,
) -> bytes:
    """A stage-0 request carrying `image` (JPEG or PNG bytes) as it is."""
    codec = image_codec(image)
    width, height = image_size(image, codec)
    if width < 1 or height < 1:
        raise ImageFormatError(f"image size {width}x{height} is empty")
    header: dict[str, Any] = {
        "request_id": request_id,
        "source": source,
        "model_hash": model_hash,
        "stage_index": 0,
        "created_at": created_at,
        "deadline": deadline,
        "policy_version": 0,
        "hops": [],
        "exit_probabilities": [],
        "tensor": {
            "kind": "image",
            "codec": codec,
            "dtype": "uint8",
            "shape": [height, width],
            "payload_bytes": len(image),
            "crc32": zlib.crc32(image),
        },
    }
    if reply_to is not None:
        header["reply_to"] = reply_to
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError(f"envelope header is {len(header_bytes)} bytes, over {MAX_HEADER_BYTES}")
    return struct.pack(">4sBI", MAGIC, VERSION, len(header_bytes)) + header_bytes + image
