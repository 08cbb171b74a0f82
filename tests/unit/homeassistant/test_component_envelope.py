"""The Home Assistant component writes envelopes on its own (no distree_mqtt there): check that
the project's decoder accepts them and sees the image the device will decode."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from distree_mqtt.wire.envelope import decode_envelope
from distree_mqtt.wire.images import decode_image

COMPONENT = Path(__file__).parents[3] / "homeassistant/custom_components/distree/envelope.py"


def _component_envelope() -> ModuleType:
    spec = importlib.util.spec_from_file_location("distree_component_envelope", COMPONENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_component_envelopes_decode_with_the_project_decoder(extension: str) -> None:
    envelope = _component_envelope()
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    image[5:25, 10:30] = (0, 200, 255)
    data = cv2.imencode(extension, image)[1].tobytes()
    now = time.time()
    message = envelope.build_image_envelope(
        data,
        request_id="abc123",
        source="homeassistant",
        model_hash="0" * 64,
        created_at=now,
        deadline=now + 2,
        reply_to="distree/home/reply/homeassistant-abc123",
    )
    decoded = decode_envelope(message, max_message_bytes=4 << 20)
    header = decoded.header
    assert header.stage_index == 0 and header.request_id == "abc123"
    assert header.reply_to == "distree/home/reply/homeassistant-abc123"
    assert header.tensor.kind == "image" and header.tensor.shape == [30, 40]
    assert header.tensor.codec == ("jpeg" if extension == ".jpg" else "png")
    pixels = decode_image(decoded.payload, header.tensor.codec, header.tensor.shape)
    assert pixels.shape == (30, 40, 3)


def test_component_refuses_what_is_not_an_image() -> None:
    envelope = _component_envelope()
    with pytest.raises(envelope.ImageFormatError, match="neither JPEG nor PNG"):
        envelope.build_image_envelope(
            b"GIF89a", request_id="a", source="s", model_hash="0" * 64, created_at=1.0, deadline=2.0
        )
    with pytest.raises(envelope.ImageFormatError):
        envelope.image_size(b"\xff\xd8\xff\xe0\x00\x01", "jpeg")
