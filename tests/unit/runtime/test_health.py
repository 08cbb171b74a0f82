"""The health checks and status lines the systemd watchdog and `systemctl status` rely on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from distree_mqtt.device.service import DeviceService, _Incoming
from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.settings import load_settings
from tests.fakes import MemoryTransport


@pytest.fixture
def device() -> Iterator[DeviceService]:
    service = DeviceService(
        load_settings(pipeline="unit", device={"stage_index": 1, "device_id": "health-1"}),
        transport=MemoryTransport(),
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture
def orchestrator() -> Iterator[OrchestratorService]:
    service = OrchestratorService(
        load_settings(pipeline="unit", orchestrator={"latency_target_ms": 250, "control_interval_s": 0.05}),
        transport=MemoryTransport(),
    )
    service.start()
    yield service
    service.stop()


def test_device_is_healthy_while_its_worker_loops(device: DeviceService) -> None:
    time.sleep(0.3)
    assert device.healthy()


def test_a_stuck_batch_withholds_the_watchdog_until_it_finishes(
    device: DeviceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setattr(device, "_run_batch", lambda *_: release.wait(10))
    monkeypatch.setattr(DeviceService, "STALL_LIMIT_S", 0.3)
    device.work.put(_Incoming(b"stage input", "distree/unit/stage/1/in", time.time()))
    time.sleep(0.6)
    assert all(thread.is_alive() for thread in device._threads)
    assert not device.healthy()
    release.set()
    time.sleep(0.2)
    assert device.healthy()


def test_a_dead_thread_is_unhealthy(device: DeviceService) -> None:
    device._stop.set()
    for thread in device._threads:
        thread.join(timeout=5)
    assert not device.healthy()


def test_device_status_line_reports_rate_and_queue(device: DeviceService) -> None:
    device.status_line()  # starts the rate window
    device.counters.add(processed=30)
    time.sleep(0.5)
    line = device.status_line()
    assert line.startswith("stage 1: ")
    rate = float(line.split(": ")[1].split(" req/s")[0])
    assert 20 < rate < 70
    assert "queue 0/64" in line and "policy v0" in line


def test_orchestrator_is_healthy_while_control_steps_succeed(orchestrator: OrchestratorService) -> None:
    time.sleep(0.3)
    assert orchestrator.healthy()


def test_orchestrator_failing_control_steps_withhold_the_watchdog(
    orchestrator: OrchestratorService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(now: float | None = None) -> None:
        raise RuntimeError("estimate bug")

    monkeypatch.setattr(orchestrator, "control_step", broken)
    monkeypatch.setattr(OrchestratorService, "STALL_LIMIT_S", 0.3)
    time.sleep(0.6)
    assert not orchestrator.healthy()


def test_orchestrator_status_line(orchestrator: OrchestratorService) -> None:
    assert orchestrator.status_line() == "adaptive, target 250 ms, p95 n/a, policy v1, stages online 0/3"
