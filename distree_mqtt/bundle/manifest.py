"""manifest.json: what a device needs to know about a bundle before it loads any weights."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from distree_mqtt.model.input_spec import InputSpec
from distree_mqtt.model.spec import ModelSpec

SCHEMA_VERSION = 2
# Version 1 lacks `exit_policy.operating_points`; everything else reads the same.
READABLE_SCHEMA_VERSIONS = (1, 2)


class StageEntry(BaseModel):
    """One stage: its weights file and the tensors it consumes and produces."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    weights_file: str = Field(title="File name inside the bundle")
    sha256: str = Field(title="SHA-256 of the weights file", pattern=r"^[0-9a-f]{64}$")
    input_shape: list[int] = Field(title="Per-sample input shape (no batch dimension)")
    input_dtype: str = "float32"
    output_shape: list[int] = Field(title="Per-sample shape of the features handed to the next stage")
    output_dtype: str = "float32"
    body_macs: int = Field(ge=0, title="Multiply-accumulates of the backbone slice per sample")
    head_macs: int = Field(ge=0, title="Multiply-accumulates of the exit head per sample")
    parameters: int = Field(ge=0)
    temperature: float = Field(1.0, gt=0, title="Calibrated softmax temperature of this exit")


class ProfilePoint(BaseModel):
    """One threshold setting and what it did on the validation split."""

    model_config = ConfigDict(extra="forbid")

    thresholds: list[float | None] = Field(
        title="Threshold per early exit; null = never exit there (the final exit always answers)"
    )
    exit_rates: list[float] = Field(title="Share of samples leaving at each exit")
    expected_macs: float = Field(title="Mean multiply-accumulates per sample")
    accuracy: float


class OperatingPoint(ProfilePoint):
    """The setting chosen offline for "comparable accuracy", with the evidence for it."""

    loss: float = Field(title="Validation accuracy lost against the final exit (paired per image)")
    loss_standard_error: float = Field(ge=0, title="Standard error of that paired loss")

    def profile_point(self) -> ProfilePoint:
        """The setting alone, as the profile lists it."""
        return ProfilePoint.model_validate(self.model_dump(include=set(ProfilePoint.model_fields)))


class CalibrationEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float


class ExitPolicyProfile(BaseModel):
    """The offline threshold profiles the orchestrator chooses from under load."""

    model_config = ConfigDict(extra="forbid")

    default_criterion: str
    profiles: dict[str, list[ProfilePoint]] = Field(
        title="Per criterion, the Pareto-optimal threshold settings on the validation split"
    )
    operating_points: dict[str, OperatingPoint] = Field(
        default_factory=dict,
        title="Per criterion, the cheapest setting whose validation loss against the final exit, plus "
        "one standard error, is within half a point (empty in schema version 1 bundles)",
    )


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int
    model_id: str
    content_hash: str = Field(title="SHA-256 over architecture, input spec and stage weight hashes")
    model: ModelSpec
    input: InputSpec
    stages: list[StageEntry]
    no_exit_macs: int = Field(title="MACs of the plain network (all bodies, final head only)")
    calibration: list[CalibrationEntry]
    exit_policy: ExitPolicyProfile
    training: dict[str, float | int | str] = Field(default_factory=dict)

    def compute_content_hash(self) -> str:
        return content_hash(self.model, self.input, [stage.sha256 for stage in self.stages])


def content_hash(model: ModelSpec, input_spec: InputSpec, stage_hashes: list[str]) -> str:
    """Identity of the computation: two bundles with this hash produce identical tensors."""
    canonical = json.dumps(
        {
            "model": model.model_dump(mode="json"),
            "input": input_spec.model_dump(mode="json"),
            "stages": stage_hashes,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
