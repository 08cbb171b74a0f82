from __future__ import annotations

import contextlib
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distree_mqtt.wire import (
    EnvelopeError,
    EnvelopeHeader,
    Hop,
    Prediction,
    TensorInfo,
    codec_names,
    decode_envelope,
    encode_envelope,
    get_codec,
)
from distree_mqtt.wire.codecs import CodecError

LIMIT = 1 << 20
SHAPE = (16, 14, 14)


def _header(codec: str = "float32", **changes) -> EnvelopeHeader:
    fields = {
        "request_id": "req-1",
        "source": "camera/front door",
        "model_hash": "ab" * 32,
        "stage_index": 1,
        "created_at": 1_700_000_000.0,
        "deadline": 1_700_000_000.5,
        "policy_version": 3,
        "hops": [Hop(stage_index=0, device="gw-1", queue_ms=0.4, compute_ms=2.5, wire_bytes=900)],
        "best": Prediction(label=7, confidence=0.62, exit_stage=0),
        "tensor": TensorInfo(
            kind="features", codec=codec, dtype="float32", shape=list(SHAPE), payload_bytes=0, crc32=0
        ),
    }
    return EnvelopeHeader(**(fields | changes))


def _features(seed: int = 0) -> np.ndarray:
    # Post-activation-like features: non-negative, many zeros, channels of different ranges.
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(0, 1, SHAPE) * rng.uniform(0.1, 5, (SHAPE[0], 1, 1)), 0).astype(np.float32)


@pytest.mark.parametrize("codec", codec_names())
def test_every_codec_round_trips_within_its_error_bound(codec: str) -> None:
    features = _features()
    message = encode_envelope(_header(codec), get_codec(codec).encode(features))
    envelope = decode_envelope(message, LIMIT)
    restored = envelope.features(LIMIT)
    assert restored.shape == SHAPE and restored.dtype == np.float32
    spans = features.max(axis=(1, 2)) - features.min(axis=(1, 2))
    implementation = get_codec(codec)
    if hasattr(implementation, "half_range"):  # centred on the channel median
        deviation = np.abs(features - np.median(features, axis=(1, 2), keepdims=True)).max()
        bound = deviation / (2 * implementation.half_range) + 1e-6
    else:
        levels = getattr(implementation, "levels", 255)
        bound = {"float32": 0.0, "float16": 1e-3 * np.abs(features).max()}.get(
            codec, spans.max() / (2 * levels) + 1e-6
        )
    assert np.abs(restored - features).max() <= bound
    assert envelope.header.best == Prediction(label=7, confidence=0.62, exit_stage=0)
    assert envelope.header.hops[0].device == "gw-1"


@pytest.mark.parametrize("codec", [name for name in codec_names() if "+" in name])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 6, 9), (2, 3, 4, 5), (1, 1, 1)])
def test_entropy_coded_codecs_round_trip_any_feature_shape(codec: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape))
    features = (rng.standard_normal(shape) * 10).astype(np.float32)
    features.flat[0] = features.max() + 50  # an outlier sets the step of its channel
    implementation = get_codec(codec)
    restored = implementation.decode(implementation.encode(features), shape, LIMIT)
    assert restored.shape == shape
    planes = features.reshape(shape[0], -1) if len(shape) > 1 else features.reshape(1, -1)
    deviation = np.abs(planes - np.median(planes, axis=1, keepdims=True)).max(axis=1, keepdims=True)
    bound = deviation / (2 * implementation.half_range) + 1e-5  # type: ignore[attr-defined]
    restored_planes = restored.reshape(planes.shape)
    assert (np.abs(restored_planes - planes) <= bound).all()
    constant = np.full(shape, 3.5, dtype=np.float32)
    assert np.array_equal(implementation.decode(implementation.encode(constant), shape, LIMIT), constant)


def test_int8_with_entropy_coding_is_at_least_four_times_smaller_than_float32() -> None:
    features = _features()
    float_size = len(get_codec("float32").encode(features))
    assert float_size / len(get_codec("int8+zlib").encode(features)) >= 4


def _valid_message() -> bytes:
    return encode_envelope(_header(), get_codec("float32").encode(_features()))


def _with_header(raw_header: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">4sBI", b"DTRE", 1, len(raw_header)) + raw_header + payload


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "too short"),
        (_valid_message()[:7], "too short"),
        (b"XXXX" + _valid_message()[4:], "bad magic"),
        (b"DTRE\x02" + _valid_message()[5:], "version 2 is not supported"),
        (struct.pack(">4sBI", b"DTRE", 1, 10**9) + b"{}", "header length"),
        (_with_header(b"{not json"), "invalid envelope header"),
        (_with_header(b"[1, 2]"), "invalid envelope header"),
        (_valid_message()[:-1], "payload is"),
        (_valid_message()[:-1] + b"\x01", "checksum mismatch"),
        (b"\x00" * (LIMIT + 1), "over the"),
    ],
)
def test_malformed_envelopes_are_rejected_with_a_reason(message: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode_envelope(message, LIMIT)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"request_id": "a/b"}, "request_id"),
        ({"request_id": "x" * 65}, "request_id"),
        ({"model_hash": "not-hex"}, "model_hash"),
        ({"stage_index": -1}, "stage_index"),
    ],
)
def test_header_fields_are_validated(changes, field) -> None:
    header = _header().model_dump(mode="json") | changes
    raw = json.dumps(header).encode()
    with pytest.raises(EnvelopeError, match=f"at {field}"):
        decode_envelope(_with_header(raw), LIMIT)


def test_deadline_before_creation_is_rejected() -> None:
    message = encode_envelope(_header(deadline=1.0, created_at=2.0), get_codec("float32").encode(_features()))
    with pytest.raises(EnvelopeError, match="deadline is before"):
        decode_envelope(message, LIMIT)


def test_non_finite_features_are_rejected() -> None:
    features = _features()
    features[0, 0, 0] = np.nan
    envelope = decode_envelope(encode_envelope(_header(), get_codec("float32").encode(features)), LIMIT)
    with pytest.raises(EnvelopeError, match="NaN or infinite"):
        envelope.features(LIMIT)


def test_a_shape_that_does_not_match_the_payload_is_rejected() -> None:
    header = _header(
        tensor=TensorInfo(
            kind="features", codec="float32", dtype="float32", shape=[16, 14, 13], payload_bytes=0, crc32=0
        )
    )
    envelope = decode_envelope(encode_envelope(header, get_codec("float32").encode(_features())), LIMIT)
    with pytest.raises(EnvelopeError, match="needs"):
        envelope.features(LIMIT)


@pytest.mark.parametrize("codec", [name for name in codec_names() if "+" in name])
def test_decompression_bombs_stop_at_the_declared_size(codec: str) -> None:
    compressor = {"int8+zlib": lambda raw: zlib.compress(raw, 9)}.get(codec)
    if compressor is None:
        import zstandard

        compressor = zstandard.ZstdCompressor().compress
    bomb = compressor(b"\x00" * (64 << 20))  # 64 MiB of zeros in a few KiB
    with pytest.raises(CodecError):
        get_codec(codec).decode(bomb, SHAPE, LIMIT)
    with pytest.raises(CodecError, match="over the"):
        get_codec(codec).decode(bomb, (4096, 4096, 16), LIMIT)


def test_unknown_codec_is_a_clear_error() -> None:
    envelope = decode_envelope(encode_envelope(_header("rot13"), b"abc"), LIMIT)
    with pytest.raises(EnvelopeError, match="unknown codec 'rot13'"):
        envelope.features(LIMIT)


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_random_bytes_only_ever_raise_envelope_errors(data: bytes) -> None:
    for message in (data, b"DTRE\x01" + data):
        with contextlib.suppress(EnvelopeError):
            decode_envelope(message, LIMIT).features(LIMIT)


def test_default_codec_envelopes_are_four_times_smaller_than_float32_on_the_reference_model() -> None:
    """Whole envelopes (header included) into stages 1 and 2 of the shipped MNIST reference."""
    from distree_mqtt.data.datasets import DataSpec, load_dataset
    from distree_mqtt.device.local import LocalPipeline
    from distree_mqtt.protocol import Policy
    from distree_mqtt.reference import reference_bundle

    images = load_dataset(DataSpec()).test.images[:24, 0]
    no_exit = Policy(version=0, mode="no-exit", thresholds=[None, None])
    sizes: dict[str, np.ndarray] = {}
    for codec in ("float32", "int8+zstd"):
        local = LocalPipeline(reference_bundle("mnist"), codec=codec)
        hops = [local.infer(image, no_exit).hops for image in images]
        sizes[codec] = np.array([[hop.wire_bytes for hop in row[1:]] for row in hops], dtype=float)
    ratios = sizes["float32"].mean(axis=0) / sizes["int8+zstd"].mean(axis=0)
    assert (ratios >= 4).all(), ratios
