"""What a device knows about the other devices of its pipeline (from retained topics)."""

from __future__ import annotations

import threading

from distree_mqtt.protocol import DeviceInfo, Telemetry


class PeerDirectory:
    def __init__(self, model_hash: str) -> None:
        self._model_hash = model_hash
        self._info: dict[str, DeviceInfo] = {}
        self._status: dict[str, str] = {}
        self._telemetry: dict[str, Telemetry] = {}
        self._lock = threading.Lock()

    def update_info(self, device: str, info: DeviceInfo | None) -> None:
        with self._lock:
            if info is None:
                self._info.pop(device, None)
            else:
                self._info[device] = info

    def update_status(self, device: str, status: str) -> None:
        with self._lock:
            self._status[device] = status

    def update_telemetry(self, device: str, telemetry: Telemetry) -> None:
        """`device` is the topic level, the same key status and descriptors use."""
        with self._lock:
            self._telemetry[device] = telemetry

    def online_devices(self, stage_index: int) -> list[str]:
        with self._lock:
            return [
                device
                for device, info in self._info.items()
                if info.stage_index == stage_index
                and info.model_hash == self._model_hash
                and self._status.get(device) == "online"
            ]

    def remaining_ms(self, from_stage: int, num_stages: int, per_hop_ms: float = 2.0) -> float | None:
        """Expected time from entering `from_stage` to the final answer, from peers' telemetry."""
        total = 0.0
        with self._lock:
            for stage in range(from_stage, num_stages):
                reports = [
                    t
                    for device, t in self._telemetry.items()
                    if t.stage_index == stage and self._status.get(device) == "online"
                ]
                if not reports:
                    return None
                # A request waits in the queue, then for its whole micro-batch.
                total += (
                    min(t.queue_delay_p50_ms + (t.batch_compute_p50_ms or t.compute_p50_ms) for t in reports)
                    + per_hop_ms
                )
        return total
