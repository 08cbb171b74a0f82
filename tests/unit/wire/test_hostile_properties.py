"""Properties of the envelope and image decoders under Hypothesis: whatever arrives, each one
fails only with its own error type, and nothing is decoded beyond the declared limits."""

from __future__ import annotations

import contextlib
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distree_mqtt.bundle import load_manifest
from distree_mqtt.reference import reference_bundle
from distree_mqtt.wire import EnvelopeError, codec_names, decode_envelope
from distree_mqtt.wire import images as image_module
from distree_mqtt.wire.images import ImageError, decode_image, preprocess

LIMIT = 1 << 20
SIZES = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.sampled_from([0, 1, 2**31, 2**32, 2**62, 2**63, 2**64 + 1, -(2**63)]),
)
HOSTILE = dict(suppress_health_check=list(HealthCheck), deadline=None)


def _pack(header: dict[str, Any], payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">4sBI", b"DTRE", 1, len(raw)) + raw + payload


@st.composite
def _envelopes(draw: st.DrawFn) -> bytes:
    """Envelopes that pass the prefix, header and checksum checks, with any shape and codec, so
    the codec layer is what meets the hostile part."""
    payload = draw(st.binary(max_size=512))
    shape = draw(st.lists(SIZES, max_size=4))
    header = {
        "request_id": "r-1",
        "source": "s",
        "model_hash": "ab" * 32,
        "stage_index": 1,
        "created_at": 1.0,
        "deadline": 2.0,
        "tensor": {
            "kind": draw(st.sampled_from(["features", "image"])),
            "codec": draw(st.one_of(st.sampled_from(codec_names()), st.text(max_size=8))),
            "dtype": "float32",
            "shape": shape,
            "payload_bytes": len(payload),
            "crc32": zlib.crc32(payload),
        },
    }
    return _pack(header, payload)


@given(_envelopes())
@settings(max_examples=400, **HOSTILE)
def test_decoding_any_well_framed_envelope_raises_only_envelope_errors(message: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(message, LIMIT).features(LIMIT)


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**62, 4], [-1, -4], [-2, -2, 4]])
def test_shapes_whose_size_overflows_or_is_negative_are_envelope_errors(shape: list[int]) -> None:
    """Regression: numpy's wrapping int64 product made these raise ValueError from reshape."""
    for payload in (b"", b"\x00" * 16):
        message = _pack(
            {
                "request_id": "r-1",
                "source": "s",
                "model_hash": "ab" * 32,
                "stage_index": 1,
                "created_at": 1.0,
                "deadline": 2.0,
                "tensor": {
                    "kind": "features",
                    "codec": "float32",
                    "dtype": "float32",
                    "shape": shape,
                    "payload_bytes": len(payload),
                    "crc32": zlib.crc32(payload),
                },
            },
            payload,
        )
        with pytest.raises(EnvelopeError):
            decode_envelope(message, LIMIT).features(LIMIT)


def _png(width: int, height: int, colour_type: int, bit_depth: int, body: bytes | None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    if body is None:  # well-formed pixel rows for small images
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
        row = 1 + (width * channels * bit_depth + 7) // 8
        body = zlib.compress(b"\x00" * (row * height))
    palette = chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff") if colour_type == 3 else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + palette + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@st.composite
def _png_files(draw: st.DrawFn) -> tuple[bytes, int, int]:
    width = draw(st.one_of(st.integers(0, 48), st.sampled_from([100_000, 2**31 - 1, 2**32 - 1])))
    height = draw(st.one_of(st.integers(0, 48), st.sampled_from([100_000, 2**31 - 1, 2**32 - 1])))
    colour_type, bit_depth = draw(
        st.sampled_from([(0, 1), (0, 8), (0, 16), (2, 8), (2, 16), (3, 8), (4, 8), (4, 16), (6, 8), (6, 16)])
    )
    small = width * height <= 48 * 48
    body = draw(st.one_of(st.none(), st.binary(max_size=64))) if small else draw(st.binary(max_size=64))
    return _png(width, height, colour_type, bit_depth, body), width, height


MAX_PIXELS = 32 * 32


@given(_png_files())
@settings(max_examples=300, **HOSTILE)
def test_images_over_the_pixel_limit_are_refused_before_decoding(png: tuple[bytes, int, int]) -> None:
    data, width, height = png
    decoded_sizes: list[int] = []
    real_imdecode = image_module.cv2.imdecode

    def spy(buffer: np.ndarray, flags: int) -> Any:
        decoded_sizes.append(width * height)
        return real_imdecode(buffer, flags)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_module.cv2, "imdecode", spy)
        try:
            image = decode_image(data, "png", [], max_pixels=MAX_PIXELS)
        except ImageError:
            image = None
    # OpenCV only ever sees images the header declares within the limit ...
    assert all(0 < pixels <= MAX_PIXELS for pixels in decoded_sizes)
    if image is not None:
        # ... what comes back is that size, 1 or 3 channels of uint8, and preprocesses.
        assert image.shape[0] * image.shape[1] <= MAX_PIXELS and image.shape[2] in (1, 3)
        assert image.dtype == np.uint8
        preprocess(image, load_manifest(reference_bundle("mnist")).input)


@given(st.binary(max_size=256), st.sampled_from(["png", "jpeg", "raw", "gif"]))
@settings(max_examples=300, **HOSTILE)
def test_any_bytes_as_an_image_raise_only_image_errors(data: bytes, codec: str) -> None:
    for payload in (data, b"\x89PNG\r\n\x1a\n" + data, b"\xff\xd8" + data):
        with contextlib.suppress(ImageError):
            image = decode_image(payload, codec, [4, 4, 1], max_pixels=MAX_PIXELS)
            assert image.shape[0] * image.shape[1] <= MAX_PIXELS
