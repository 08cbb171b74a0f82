"""Feature codecs: how a stage's float32 features are packed for the next device.

Every codec has one interface: `encode(features) -> bytes` and `decode(payload, shape) ->
float32 array`. Decoding checks sizes before allocating anything and never trusts a length
field it has not validated against the declared shape.
"""

from __future__ import annotations

import io
import zlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import zstandard


class CodecError(ValueError):
    """A payload that does not decode to the declared shape."""


def _element_count(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


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


class _EntropyCodedInt8(Int8Codec):
    """int8 followed by a general-purpose compressor; decompression is capped at the size
    the declared shape allows, so a decompression bomb cannot allocate more."""

    def compress(self, raw: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, payload: bytes, limit: int) -> bytes:
        raise NotImplementedError

    def encode(self, features: np.ndarray) -> bytes:
        return self.compress(super().encode(features))

    def decode(self, payload: bytes, shape: tuple[int, ...], max_output_bytes: int) -> np.ndarray:
        channels = shape[0] if len(shape) > 1 else 1
        limit = 8 * channels + _element_count(shape)
        if limit > max_output_bytes:
            raise CodecError(
                f"shape {list(shape)} decodes to {limit} bytes, over the {max_output_bytes} limit"
            )
        return super().decode(self.decompress(payload, limit), shape, max_output_bytes)


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
    """63 levels per channel in byte containers, then zstd: about 6 bits of entropy per value
    instead of 7.5, for links where bytes matter more than the last bit of precision."""

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
