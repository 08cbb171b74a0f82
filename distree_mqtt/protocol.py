"""JSON messages of the protocol: policy, results, telemetry, device descriptors, errors.

All are pydantic models: they validate what arrives (anything on a home network can publish)
and serialise what we send. See docs/protocol.md for the topics they travel on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PolicyMode = Literal["adaptive", "static", "no-exit"]
OutcomeKind = Literal["result", "degraded", "timeout", "rejected"]


class Policy(BaseModel):
    """Exit thresholds every device applies; retained on control/policy, versioned."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    version: int = Field(ge=0)
    mode: PolicyMode = "adaptive"
    criterion: str = Field("max_softmax", max_length=64)
    thresholds: list[float | None] = Field(
        default_factory=list,
        max_length=64,
        title="Per early exit; null means never exit there",
    )
    latency_target_ms: float = Field(500.0, gt=0, le=3_600_000)
    remaining_ms: list[float] = Field(
        default_factory=list,
        max_length=64,
        title="Expected time from entering stage k to the final answer (deadline-aware exits)",
    )
    issued_at: float = 0.0

    def threshold(self, stage_index: int) -> float | None:
        if self.mode == "no-exit" or stage_index >= len(self.thresholds):
            return None
        return self.thresholds[stage_index]


class HopReport(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    stage_index: int
    device: str
    queue_ms: float
    compute_ms: float
    wire_bytes: int = 0


class Result(BaseModel):
    """Exactly one per request, on results/<source> (and the request's reply topic)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    request_id: str
    source: str
    outcome: OutcomeKind
    label: int | None = None
    class_name: str | None = None
    confidence: float | None = None
    exit_stage: int | None = None
    degraded: bool = False
    reason: str | None = Field(None, title="Why degraded or rejected")
    latency_ms: float | None = Field(None, title="From request creation to this result")
    hops: list[HopReport] = Field(default_factory=list)
    policy_version: int | None = None
    model_id: str | None = None
    completed_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("result", "degraded")


class Progress(BaseModel):
    """A request moved on to `stage_reached` carrying this best prediction so far (on
    progress/<source>); the client answers with it, degraded, if no later stage answers by
    `settle_by`."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    request_id: str = Field(max_length=64)
    label: int = Field(ge=0)
    confidence: float = Field(ge=0, le=1)
    exit_stage: int = Field(ge=0, le=64)
    stage_reached: int = Field(ge=1, le=64)
    deadline: float = Field(gt=0)
    policy_version: int = Field(0, ge=0)
    model_id: str | None = Field(None, max_length=128)


class DeviceInfo(BaseModel):
    """Retained descriptor of a device: what it serves (cleared on a clean stop)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    device: str
    stage_index: int = Field(ge=0)
    num_stages: int = Field(ge=1)
    model_id: str
    model_hash: str
    codec: str
    slowdown: float = 1.0
    started_at: float


class Telemetry(BaseModel):
    """Numbers from the network: finite and non-negative, or the message is invalid."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    device: str = Field(max_length=128)
    stage_index: int = Field(ge=0, le=64)
    timestamp: float = Field(ge=0)
    interval_s: float = Field(ge=0)
    queue_length: int = Field(ge=0)
    queue_capacity: int = Field(ge=0)
    queue_delay_p50_ms: float = Field(ge=0)
    queue_delay_p95_ms: float = Field(ge=0)
    compute_p50_ms: float = Field(ge=0)
    compute_p95_ms: float = Field(ge=0)
    batch_compute_p50_ms: float = Field(
        0.0, ge=0, title="Time one micro-batch takes (what a request waits for)"
    )
    service_p50_ms: float = Field(
        0.0, ge=0, title="Worker busy time per request: decode, stage, encode, publish (what bounds capacity)"
    )
    batch_size_mean: float = Field(0.0, ge=0, title="Mean micro-batch size in the recent window")
    batch_fixed_ms: float = Field(
        0.0, ge=0, title="Batch cost model c(b) = fixed + per_request x b: the fixed part (ms)"
    )
    batch_per_request_ms: float = Field(0.0, ge=0, title="Batch cost model: the per-request part (ms)")
    answer_cost_ms: float = Field(
        0.0, ge=0, title="Mean worker time to answer a request here (scoring, result, publish)"
    )
    forward_cost_ms: float = Field(
        0.0, ge=0, title="Mean worker time to hand a request on (scoring, encoding, publish)"
    )
    max_batch: int = Field(1, ge=1, title="Largest micro-batch this device runs")
    received: int = Field(ge=0, title="Stage inputs received since start")
    processed: int = Field(ge=0)
    exited: int = Field(ge=0, title="Requests answered at this stage since start")
    forwarded: int = Field(ge=0)
    degraded: int = Field(ge=0)
    rejected: int = Field(ge=0)
    expired: int = Field(
        0, ge=0, title="Inputs dropped unanswered: past settle_by, the client had settled them already"
    )
    errors: int = Field(ge=0)
    bytes_in: int = Field(ge=0)
    bytes_out: int = Field(ge=0)
    policy_version: int = Field(ge=0)


def telemetry_kind(payload: bytes) -> str:
    """What sent a telemetry report: `stage` for stage devices (their reports carry no `kind`),
    `camera` for camera services, which share the telemetry topics but serve no stage."""
    if b'"kind"' not in payload:
        return "stage"
    try:
        kind = json.loads(payload).get("kind")
    except (ValueError, AttributeError):
        return "stage"  # let the Telemetry validation reject it as usual
    return kind if isinstance(kind, str) else "stage"


def stage_telemetry(payload: bytes, on_invalid: Callable[[], None]) -> Telemetry | None:
    """A stage device's telemetry report; None for a camera's (they share the topics but serve
    no stage) and for an invalid one, after calling `on_invalid`."""
    if telemetry_kind(payload) != "stage":
        return None
    try:
        return Telemetry.model_validate_json(payload)
    except ValidationError:
        on_invalid()
        return None


class ErrorReport(BaseModel):
    """One rejected message: why, and where it came from; never the payload."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    component: str
    topic: str
    reason: str
    request_id: str | None = None
    source: str | None = None
    timestamp: float
