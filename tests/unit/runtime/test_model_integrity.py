"""A device runs only the model it was given: verified weights, and envelopes of that model alone."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from distree_mqtt.cli.main import main
from distree_mqtt.device.service import DeviceService
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.wire import EnvelopeHeader, TensorInfo, encode_envelope
from distree_mqtt.wire.images import encode_image
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="integrity")


def test_the_device_command_refuses_tampered_weights_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(reference_bundle("mnist"), bundle)
    weights = bundle / "stage-1.safetensors"
    tampered = bytearray(weights.read_bytes())
    tampered[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(tampered))
    monkeypatch.setenv("DISTREE_BROKER__CONNECT_ATTEMPTS", "1")
    common = ["device", "--bundle", str(bundle), "--broker", "mqtt://127.0.0.1:1", "--pipeline", "integrity"]

    assert main([*common, "--stage", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("distree device: error:") and error.count("\n") == 1, error
    assert "stage-1.safetensors: hash mismatch" in error

    # Stage 0 of the same bundle loads (a device reads its own stage only) and fails later, at
    # the broker: the refusal above was the hash, not the bundle's location.
    assert main([*common, "--stage", "0"]) == 2
    error = capsys.readouterr().err
    assert "cannot reach the broker" in error and "hash mismatch" not in error, error


@pytest.fixture
def device():
    transport = MemoryTransport()
    settings = load_settings(pipeline="integrity", device={"stage_index": 0, "device_id": "d0"})
    service = DeviceService(settings, transport=transport)
    service.start()
    yield service, transport
    service.stop()


def _request(request_id: str, model_hash: str) -> bytes:
    payload, shape = encode_image(np.zeros((28, 28), np.uint8), "raw")
    now = time.time()
    header = EnvelopeHeader(
        request_id=request_id,
        source="cam",
        model_hash=model_hash,
        stage_index=0,
        created_at=now,
        deadline=now + 30,
        tensor=TensorInfo(kind="image", codec="raw", dtype="uint8", shape=shape, payload_bytes=0, crc32=0),
    )
    return encode_envelope(header, payload)


def test_an_envelope_of_another_model_version_is_rejected_on_the_errors_topic(device) -> None:
    service, transport = device
    other_version = "f" * 64
    assert service.runner.model_hash != other_version
    transport.deliver(TOPICS.stage_input(0), _request("old-model", other_version))
    transport.deliver(TOPICS.stage_input(0), _request("this-model", service.runner.model_hash))
    deadline = time.monotonic() + 5
    while service.counters.processed < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.counters.processed == 1 and service.counters.rejected == 1

    (error,) = [json.loads(payload) for payload in transport.on(TOPICS.errors)]
    assert error["request_id"] == "old-model" and error["component"] == "d0"
    assert "model hash" in error["reason"] and error["topic"] == TOPICS.stage_input(0)
    results = {json.loads(p)["request_id"]: json.loads(p) for p in transport.on(TOPICS.results("cam"))}
    assert results["old-model"]["outcome"] == "rejected" and "model hash" in results["old-model"]["reason"]
    assert results["this-model"]["outcome"] == "result"  # the same request of this model is run
