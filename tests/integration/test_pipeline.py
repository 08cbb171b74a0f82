from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from distree_mqtt.client import Pipeline
from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.device.service import DeviceService
from distree_mqtt.settings import load_settings

_names = itertools.count()


@pytest.fixture
def pipeline_name() -> str:
    return f"p{next(_names)}"


def start_devices(broker_url: str, pipeline: str, stages=(0, 1, 2), **device_options) -> list[DeviceService]:
    services = []
    for stage in stages:
        settings = load_settings(
            broker={"url": broker_url},
            pipeline=pipeline,
            device={
                "stage_index": stage,
                "device_id": f"{pipeline}-d{stage}-{len(services)}",
                **device_options,
            },
        )
        service = DeviceService(settings)
        service.start()
        services.append(service)
    return services


@pytest.fixture
def devices(broker, pipeline_name) -> Iterator[list[DeviceService]]:
    services = start_devices(broker.url, pipeline_name)
    yield services
    for service in services:
        service.stop()


def test_images_get_exactly_one_result_each(broker, pipeline_name, devices) -> None:
    test = load_dataset(DataSpec()).test
    with Pipeline(broker.url, pipeline_name) as client:
        futures = [client.submit(test.images[i, 0], deadline_ms=5000) for i in range(40)]
        results = [future.result(timeout=15) for future in futures]
    assert all(r.outcome in ("result", "degraded") for r in results)
    accuracy = sum(r.label == int(test.labels[i]) for i, r in enumerate(results)) / len(results)
    assert accuracy >= 0.9
    assert {r.exit_stage for r in results} >= {0}
    assert client.duplicates == 0
