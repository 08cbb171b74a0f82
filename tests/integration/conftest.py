"""Integration fixtures: a real Mosquitto per test module, services that always stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from distree_mqtt.broker import MosquittoBroker, mosquitto_available


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoBroker]:
    if mosquitto_available() is None:
        pytest.fail("integration tests need mosquitto (apt-get install mosquitto); .ci/run installs it")
    with MosquittoBroker() as running:
        yield running
