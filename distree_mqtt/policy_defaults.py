"""The policy a device applies before any orchestrator has spoken."""

from __future__ import annotations

from distree_mqtt.bundle.manifest import Manifest, ProfilePoint
from distree_mqtt.protocol import Policy

# Schema version 1 bundles carry no operating points: fall back to this much validation loss.
LEGACY_TOLERANCE = 0.005


def default_policy(manifest: Manifest, criterion: str | None = None) -> Policy:
    """Static thresholds so a pipeline without an orchestrator still exits sensibly: the bundle's
    operating point for the criterion (cheapest setting within half a point of the final exit on
    validation, one standard error to spare), the setting the offline report measures on test."""
    policy = manifest.exit_policy
    name = criterion or policy.default_criterion
    front = policy.profiles.get(name)
    if not front:
        raise ValueError(f"bundle {manifest.model_id} has no threshold profile for criterion {name!r}")
    point = policy.operating_points.get(name) or _legacy_point(front)
    return Policy(version=0, mode="static", criterion=name, thresholds=list(point.thresholds))


def _legacy_point(front: list[ProfilePoint]) -> ProfilePoint:
    best = max(p.accuracy for p in front)
    return min((p for p in front if p.accuracy >= best - LEGACY_TOLERANCE), key=lambda p: p.expected_macs)
