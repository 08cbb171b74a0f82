"""The policy a device applies before any orchestrator has spoken."""

from __future__ import annotations

from distree_mqtt.bundle.manifest import Manifest
from distree_mqtt.protocol import Policy

DEFAULT_TOLERANCE = 0.005


def default_policy(manifest: Manifest, criterion: str | None = None) -> Policy:
    """Static thresholds from the bundle's profile: the cheapest validation setting within half a
    point of the most accurate one, so a pipeline without an orchestrator still exits sensibly."""
    name = criterion or manifest.exit_policy.default_criterion
    front = manifest.exit_policy.profiles.get(name)
    if not front:
        raise ValueError(f"bundle {manifest.model_id} has no threshold profile for criterion {name!r}")
    best = max(point.accuracy for point in front)
    chosen = min((p for p in front if p.accuracy >= best - DEFAULT_TOLERANCE), key=lambda p: p.expected_macs)
    return Policy(version=0, mode="static", criterion=name, thresholds=list(chosen.thresholds))
