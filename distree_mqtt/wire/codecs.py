"""Feature codecs: how a stage's float32 features are packed for the next device.

Every codec has one interface: `encode(features) -> bytes` and `decode(payload, shape) ->
float32 array`. Decoding checks sizes before allocating anything and never trusts a length
field it has not validated against the declared shape.
"""

from __future__ import annotations

import io
import math
import zlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import zstandard


class CodecError(ValueError):
    """A payload that does not decode to the declared shape."""


def _element_count(shape: tuple[int, ...]) -> int:
    # Exact integer product of sizes of at least 1: numpy's int64 product wraps around for
    # hostile shapes such as [2**32, 2**32], and a zero size hides any other, so an empty
    # payload would look right for them and reshape would fail outside CodecError.
    if any(size < 1 for size in shape):
        raise CodecError(f"shape {list(shape)} has a size below 1")
    return math.prod(shape)


class FeatureCodec(ABC):
    name: ClassVar[str]

    @abstractmethod
    def encode(self, features: np.ndarray) -> bytes: ...

    @abstractmethod
    def decode(self, payload: bytes, shape: tuple[int, ...], max_output_bytes: int) -> np.ndarray: ...


class Float32Codec(FeatureCodec):
    name = "float32"

    def encode(self, features: np.ndarray) -> bytes:
        return np.ascontiguousarray(features, dtype="<f4").tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...], max_output_bytes: int) -> np.ndarray:
        expected = _element_count(shape) * 4
        if len(payload) != expected:
            raise CodecError(f"float32 payload is {len(payload)} bytes, shape {list(shape)} needs {expected}")
        return np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)


class Float16Codec(FeatureCodec):
    name = "float16"

    def encode(self, features: np.ndarray) -> bytes:
        return np.ascontiguousarray(features, dtype="<f2").tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...], max_output_bytes: int) -> np.ndarray:
        expected = _element_count(shape) * 2
        if len(payload) != expected:
            raise CodecError(f"float16 payload is {len(payload)} bytes, shape {list(shape)} needs {expected}")
        return np.frombuffer(payload, dtype="<f2").reshape(shape).astype(np.float32)


class Int8Codec(FeatureCodec):
    """Per-channel affine uint8: channel c is stored as round((x - min_c) / scale_c).

    Layout: C float32 minimums, C float32 scales, then the uint8 values (channel-major).
    The worst-case error per value is scale_c / 2 = (max_c - min_c) / (2 * levels).
    """

    name = "int8"
    levels = 255

    def encode(self, features: np.ndarray) -> bytes:
        features = np.asarray(features, dtype=np.float32)
        channels = features.reshape(features.shape[0], -1) if features.ndim > 1 else features.reshape(1, -1)
        low = channels.min(axis=1)
        scale = (channels.max(axis=1) - low) / float(self.levels)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        quantised = np.clip(np.rint((channels - low[:, None]) / scale[:, None]), 0, self.levels).astype(
            np.uint8
        )
        return low.astype("<f4").tobytes() + scale.astype("<f4").tobytes() + quantised.tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...], max_output_bytes: int) -> np.ndarray:
        channels = shape[0] if len(shape) > 1 else 1
        values = _element_count(shape)
        expected = 8 * channels + values
        if len(payload) != expected:
            raise CodecError(f"int8 payload is {len(payload)} bytes, shape {list(shape)} needs {expected}")
        low = np.frombuffer(payload, dtype="<f4", count=channels)
        scale = np.frombuffer(payload, dtype="<f4", count=channels, offset=4 * channels)
        quantised = np.frombuffer(payload, dtype=np.uint8, offset=8 * channels).reshape(channels, -1)
        restored = quantised.astype(np.float32) * scale[:, None] + low[:, None]
        return restored.reshape(shape)


class _EntropyCodedInt8(FeatureCodec):
    """Quantise, predict, then entropy-code: what a general-purpose compressor cannot see.

    Each channel is quantised around its median with a symmetric step (max |x - median| /
    half-range), so every channel's codes share one shape and the compressor's single literal
    table fits them all. Each code is then replaced by its residual from the planar prediction
    left + up - up-left (mod 256): neighbouring activations are correlated, and the residuals
    carry about 1.3 bits per value less than the codes. Decoding is two cumulative sums.

    Layout before compression: one layout byte (0: codes, 1: residuals), C float32 centres,
    C float32 steps, then one byte per value (codes or residuals, mod 256). The
    worst-case error per value is step_c / 2. Decompression is capped at the size the declared
    shape allows, so a decompression bomb cannot allocate more.
    """

    levels: ClassVar[int] = 255

    def compress(self, raw: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, payload: bytes, limit: int) -> bytes:
        raise NotImplementedError

    @property
    def half_range(self) -> int:
        return self.levels // 2

    def encode(self, features: np.ndarray) -> bytes:
        features = np.asarray(features, dtype=np.float32)
        planes = _as_planes(features)
        flat = planes.reshape(planes.shape[0], -1)
        centre = np.median(flat, axis=1).astype(np.float32)
        step = (np.abs(flat - centre[:, None]).max(axis=1) / self.half_range).astype(np.float32)
        step = np.where(step > 0, step, 1.0).astype(np.float32)
        codes = np.rint((planes - centre[:, None, None]) / step[:, None, None]).astype(np.int16)
        codes = np.clip(codes, -self.half_range, self.half_range)
        scales = centre.astype("<f4").tobytes() + step.astype("<f4").tobytes()
        residuals = np.diff(np.diff(codes, axis=2, prepend=0), axis=1, prepend=0)
        # Features without spatial structure (pooled vectors, noise) compress better as plain
        # codes: keep whichever is smaller, flagged by the first byte.
        candidates = [
            self.compress(bytes([mode]) + scales + (values % 256).astype(np.uint8).tobytes())
            for mode, values in ((_CODES, codes), (_PLANAR_RESIDUALS, residuals))
        ]
        return min(candidates, key=len)

    def decode(self, payload: bytes, shape: tuple[int, ...], max_output_bytes: int) -> np.ndarray:
        planes_shape = _planes_shape(shape)
        channels = planes_shape[0]
        limit = 1 + 8 * channels + _element_count(shape)
        if limit > max_output_bytes:
            raise CodecError(
                f"shape {list(shape)} decodes to {limit} bytes, over the {max_output_bytes} limit"
            )
        raw = self.decompress(payload, limit)
        if len(raw) != limit:
            raise CodecError(f"{self.name} payload is {len(raw)} bytes, shape {list(shape)} needs {limit}")
        mode = raw[0]
        if mode not in (_CODES, _PLANAR_RESIDUALS):
            raise CodecError(f"{self.name} payload has unknown layout {mode}")
        centre = np.frombuffer(raw, dtype="<f4", count=channels, offset=1)
        step = np.frombuffer(raw, dtype="<f4", count=channels, offset=1 + 4 * channels)
        if not (np.isfinite(centre).all() and np.isfinite(step).all()):
            raise CodecError(f"{self.name} payload has non-finite scales")
        stored = np.frombuffer(raw, dtype=np.uint8, offset=1 + 8 * channels).reshape(planes_shape)
        codes = stored.astype(np.int64)
        if mode == _PLANAR_RESIDUALS:
            codes = np.cumsum(np.cumsum(codes, axis=1), axis=2) % 256
        codes = np.where(codes > 127, codes - 256, codes)  # back to signed: |code| <= half_range
        restored = codes.astype(np.float32) * step[:, None, None] + centre[:, None, None]
        return restored.reshape(shape)


_CODES, _PLANAR_RESIDUALS = 0, 1


def _planes_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, rows, columns) view of a per-sample feature shape."""
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    if len(shape) <= 1:
        return (1, 1, _element_count(shape))
    return (shape[0], 1, _element_count(shape[1:]))


def _as_planes(features: np.ndarray) -> np.ndarray:
    return features.reshape(_planes_shape(tuple(features.shape)))


class Int8ZlibCodec(_EntropyCodedInt8):
    name = "int8+zlib"

    def compress(self, raw: bytes) -> bytes:
        return zlib.compress(raw, 6)

    def decompress(self, payload: bytes, limit: int) -> bytes:
        decompressor = zlib.decompressobj()
        try:
            raw = decompressor.decompress(payload, limit + 1)
        except zlib.error as error:
            raise CodecError(f"int8+zlib payload is corrupt: {error}") from None
        if len(raw) > limit or decompressor.unconsumed_tail or not decompressor.eof:
            raise CodecError("int8+zlib payload does not decode to the declared shape")
        return raw


class Int8ZstdCodec(_EntropyCodedInt8):
    name = "int8+zstd"

    def compress(self, raw: bytes) -> bytes:
        return bytes(zstandard.ZstdCompressor(level=3).compress(raw))

    def decompress(self, payload: bytes, limit: int) -> bytes:
        # A frame may declare its content size, which decompress() would allocate up front:
        # check it, then read through a stream that stops at the limit whatever the frame says.
        try:
            declared = zstandard.frame_content_size(payload)
            if declared > limit:
                raise CodecError("int8+zstd payload does not decode to the declared shape")
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=False)
            raw = reader.read(limit + 1)
        except zstandard.ZstdError as error:
            raise CodecError(f"int8+zstd payload is corrupt: {error}") from None
        if len(raw) > limit:
            raise CodecError("int8+zstd payload does not decode to the declared shape")
        return bytes(raw)


class Int6ZstdCodec(Int8ZstdCodec):
    """63 levels per channel instead of 255, for links where bytes matter more than the last
    bits of precision."""

    name = "int6+zstd"
    levels = 63


_CODECS: dict[str, FeatureCodec] = {
    codec.name: codec
    for codec in (
        Float32Codec(),
        Float16Codec(),
        Int8Codec(),
        Int8ZlibCodec(),
        Int8ZstdCodec(),
        Int6ZstdCodec(),
    )
}


def get_codec(name: str) -> FeatureCodec:
    try:
        return _CODECS[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(_CODECS)}") from None


def codec_names() -> list[str]:
    return list(_CODECS)
