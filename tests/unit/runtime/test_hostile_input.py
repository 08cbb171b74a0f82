"""Inputs that once could stop a device or exhaust memory."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest
import zstandard

from distree_mqtt.bench.fuzz_inputs import TELEMETRY
from distree_mqtt.device.service import DeviceService, peek_request
from distree_mqtt.protocol import Policy, Telemetry
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics, escape_level
from distree_mqtt.wire.codecs import CodecError, get_codec
from distree_mqtt.wire.images import encode_image
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="hostile")


def _raw_envelope(header: dict, payload: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">4sBI", b"DTRE", 1, len(raw)) + raw + payload


@pytest.fixture
def device():
    transport = MemoryTransport()
    settings = load_settings(pipeline="hostile", device={"stage_index": 0, "device_id": "d0"})
    service = DeviceService(settings, transport=transport)
    service.start()
    yield service, transport
    service.stop()


def _valid_request(service: DeviceService, request_id: str, source: str = "cam") -> bytes:
    from distree_mqtt.wire import EnvelopeHeader, TensorInfo, encode_envelope

    payload, shape = encode_image(np.zeros((28, 28), np.uint8), "raw")
    now = time.time()
    header = EnvelopeHeader(
        request_id=request_id,
        source=source,
        model_hash=service.runner.model_hash,
        stage_index=0,
        created_at=now,
        deadline=now + 30,
        tensor=TensorInfo(kind="image", codec="raw", dtype="uint8", shape=shape, payload_bytes=0, crc32=0),
    )
    return encode_envelope(header, payload)


def _wait(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_lone_surrogate_in_the_header_is_rejected_and_the_device_keeps_serving(device) -> None:
    service, transport = device
    hostile = _raw_envelope({"request_id": "\ud800", "source": "\udfff"}).replace(b'"\\ud800"', b'"\\ud800"')
    assert peek_request(hostile) == (None, None)
    transport.deliver(TOPICS.stage_input(0), hostile)
    transport.deliver(TOPICS.stage_input(0), _valid_request(service, "after"))
    _wait(lambda: service.counters.processed == 1)
    assert service.counters.rejected == 1
    assert any(b'"after"' in payload for payload in transport.on(TOPICS.results("cam")))


def test_the_same_request_id_from_two_sources_is_not_a_duplicate(device) -> None:
    service, transport = device
    transport.deliver(TOPICS.stage_input(0), _valid_request(service, "frame-1", "cam-a"))
    transport.deliver(TOPICS.stage_input(0), _valid_request(service, "frame-1", "cam-b"))
    transport.deliver(TOPICS.stage_input(0), _valid_request(service, "frame-1", "cam-b"))  # redelivery
    _wait(lambda: service.counters.processed == 2 and service.counters.duplicates == 1)


def test_a_policy_with_an_unknown_criterion_is_refused(device) -> None:
    service, transport = device
    before = service.policy
    transport.deliver(TOPICS.policy, Policy(version=9, criterion="astrology").model_dump_json())
    assert service.policy is before
    assert "unknown exit criterion" in json.loads(transport.on(TOPICS.errors)[-1])["reason"]
    transport.deliver(TOPICS.stage_input(0), _valid_request(service, "still-served"))
    _wait(lambda: service.counters.processed == 1)


def test_zstd_frames_declaring_huge_sizes_fail_before_allocating() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"\x00" * 1024)
    # Same blocks, but the frame header now claims 1 TiB of content (single-segment, 8-byte size).
    header_size = zstandard.frame_header_size(frame)
    huge = frame[:4] + bytes([0xE0]) + (1 << 40).to_bytes(8, "little") + frame[header_size:]
    assert zstandard.frame_content_size(huge) == 1 << 40
    for payload in (frame, huge):
        with pytest.raises(CodecError):
            get_codec("int8+zstd").decode(payload, (16, 28, 28), 1 << 20)


def test_non_finite_or_negative_telemetry_is_invalid() -> None:
    good = {**TELEMETRY, "device": "d"}
    Telemetry.model_validate_json(json.dumps(good))
    for field, value in (("service_p50_ms", "NaN"), ("compute_p50_ms", "Infinity"), ("received", "-5")):
        with pytest.raises(ValueError):
            Telemetry.model_validate_json(json.dumps(good)[:-1] + f', "{field}": {value}}}')


def test_long_ids_stay_distinct_after_escaping() -> None:
    first, second = "x" * 200 + "a", "x" * 200 + "b"
    assert escape_level(first) != escape_level(second)
    assert len(escape_level("/" * 500)) < 400
