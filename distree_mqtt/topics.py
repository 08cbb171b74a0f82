"""The MQTT topic layout of one pipeline (see docs/protocol.md).

Client-supplied strings (source ids, device ids) never become topic levels as they are:
`escape_level` percent-encodes everything outside [A-Za-z0-9_.-], so `+`, `#`, `/`, `$` and
non-UTF-8 bytes cannot change which topics a message reaches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
MAX_LEVEL_BYTES = 128


def escape_level(value: str | bytes) -> str:
    """One safe topic level: percent-encoding of the UTF-8 bytes outside the safe set."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    if not raw:
        return "%00"
    suffix = ""
    if len(raw) > MAX_LEVEL_BYTES:
        # Long ids keep a readable prefix and a digest of the whole, so they stay distinct.
        suffix = "~" + hashlib.sha256(raw).hexdigest()[:16]
        raw = raw[: MAX_LEVEL_BYTES - 32]
    return "".join(chr(byte) if byte in _SAFE else f"%{byte:02X}" for byte in raw) + suffix


@dataclass(frozen=True)
class Topics:
    prefix: str = "distree"
    pipeline: str = "default"

    def __post_init__(self) -> None:
        for name, value in (("prefix", self.prefix), ("pipeline", self.pipeline)):
            if not value or any(char in value for char in "+#") or value != value.strip("/"):
                raise ValueError(f"topic {name} {value!r} must be non-empty, without + or # or outer slashes")
        if "/" in self.pipeline:
            raise ValueError(f"pipeline name {self.pipeline!r} must be a single topic level")

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.pipeline}"

    def stage_input(self, stage_index: int) -> str:
        return f"{self.root}/stage/{stage_index}/in"

    def stage_input_shared(self, stage_index: int, group: str) -> str:
        """Shared subscription: replicas in one group each get a share of the work."""
        return f"$share/{escape_level(group)}/{self.stage_input(stage_index)}"

    def results(self, source: str) -> str:
        return f"{self.root}/results/{escape_level(source)}"

    @property
    def all_results(self) -> str:
        return f"{self.root}/results/+"

    def progress(self, source: str) -> str:
        """A forwarding device's best prediction so far: the client's answer if no later stage does."""
        return f"{self.root}/progress/{escape_level(source)}"

    @property
    def policy(self) -> str:
        return f"{self.root}/control/policy"

    def control_set(self, setting: str) -> str:
        return f"{self.root}/control/set/{escape_level(setting)}"

    @property
    def all_control_set(self) -> str:
        return f"{self.root}/control/set/+"

    def telemetry(self, device: str) -> str:
        return f"{self.root}/telemetry/{escape_level(device)}"

    @property
    def all_telemetry(self) -> str:
        return f"{self.root}/telemetry/+"

    def status(self, device: str) -> str:
        return f"{self.root}/status/{escape_level(device)}"

    @property
    def all_status(self) -> str:
        return f"{self.root}/status/+"

    def device_info(self, device: str) -> str:
        return f"{self.root}/devices/{escape_level(device)}"

    @property
    def all_device_info(self) -> str:
        return f"{self.root}/devices/+"

    @property
    def errors(self) -> str:
        return f"{self.root}/errors"

    @property
    def orchestrator_state(self) -> str:
        return f"{self.root}/orchestrator/state"

    # Camera services (`distree camera`): one subtree per camera; the camera's status and
    # telemetry use the pipeline-wide status/<id> and telemetry/<id> topics like any device.
    def camera(self, camera: str) -> str:
        return f"{self.root}/camera/{escape_level(camera)}"

    def camera_state(self, camera: str) -> str:
        """Retained JSON: last label, class name, confidence and when."""
        return f"{self.camera(camera)}/state"

    def camera_events(self, camera: str) -> str:
        """Non-retained JSON events: new / update / end of a detection."""
        return f"{self.camera(camera)}/events"

    def camera_snapshot(self, camera: str) -> str:
        """Retained annotated JPEG of the last detection."""
        return f"{self.camera(camera)}/snapshot"

    def camera_detected(self, camera: str, class_name: str) -> str:
        """Retained ON/OFF per configured class."""
        return f"{self.camera(camera)}/detected/{escape_level(class_name)}"

    def last_level(self, topic: str) -> str:
        return topic.rsplit("/", 1)[-1]
