"""Real Home Assistant, its MQTT integration with a mocked paho client, our custom component."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PilImage


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None, mock_hass_config: None) -> None:
    """Let Home Assistant load custom_components/distree; an empty configuration.yaml."""


def jpeg_bytes(width: int = 12, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    PilImage.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def expected_lingering_timers() -> bool:
    """The MQTT client's periodic housekeeping timer outlives a test (Home Assistant stops it
    on shutdown, after the plugin's check); lingering tasks still fail a test."""
    return True
