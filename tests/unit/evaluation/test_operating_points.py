"""A bundle's operating points and the static policy a device applies without an orchestrator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distree_mqtt.bundle.manifest import ExitPolicyProfile, Manifest, ProfilePoint
from distree_mqtt.evaluation.calibrate import profile_criteria
from distree_mqtt.evaluation.exit_cache import ExitCache
from distree_mqtt.evaluation.tradeoff import COMPARABLE_ACCURACY
from distree_mqtt.model.criteria import criterion_names
from distree_mqtt.policy_defaults import default_policy
from distree_mqtt.reference import reference_bundle

MACS = [10, 30, 60]
REPORTS = Path(__file__).resolve().parents[3] / "docs" / "benchmarks"


def _cache(samples: int = 3000, classes: int = 10) -> ExitCache:
    """Three exits whose confidence tracks per-image difficulty, later exits right more often."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    difficulty = torch.rand(samples, generator=generator)
    logits, embeddings = [], []
    for reach in (0.7, 0.85, 0.92):
        noise = torch.randn(samples, classes, generator=generator)
        wrong = (labels + 1 + torch.randint(0, classes - 1, (samples,), generator=generator)) % classes
        answer = torch.where(difficulty < reach, labels, wrong)
        strength = 4.0 * (1.0 - difficulty).unsqueeze(1) + 0.5
        logits.append(noise + strength * torch.nn.functional.one_hot(answer, classes))
        embeddings.append(torch.randn(samples, 8, generator=generator))
    return ExitCache(logits=logits, embeddings=embeddings, labels=labels)


@pytest.fixture(scope="module")
def profile() -> ExitPolicyProfile:
    return profile_criteria(_cache(), [1.0, 1.0, 1.0], MACS)


def test_every_criterion_gets_an_operating_point_that_its_profile_contains(profile) -> None:
    assert sorted(profile.operating_points) == sorted(criterion_names())
    for name, point in profile.operating_points.items():
        assert point.profile_point() in profile.profiles[name]
        costs = [p.expected_macs for p in profile.profiles[name]]
        assert costs == sorted(costs)


def test_operating_points_are_within_the_tolerance_with_their_margin_of_error(profile) -> None:
    selection = COMPARABLE_ACCURACY
    for point in profile.operating_points.values():
        assert point.loss_standard_error > 0
        assert point.loss + selection.confidence_z * point.loss_standard_error <= selection.tolerance
        assert point.expected_macs < MACS[-1]  # the synthetic exits are good enough to save something


def test_the_default_criterion_is_the_one_whose_operating_point_is_cheapest(profile) -> None:
    cheapest = min(point.expected_macs for point in profile.operating_points.values())
    assert profile.operating_points[profile.default_criterion].expected_macs == cheapest


def test_default_policy_applies_the_bundles_operating_point(profile) -> None:
    manifest = Manifest.model_validate(
        _reference_manifest().model_dump() | {"exit_policy": profile.model_dump()}
    )
    for name in criterion_names():
        policy = default_policy(manifest, name)
        assert policy.mode == "static" and policy.criterion == name
        assert policy.thresholds == profile.operating_points[name].thresholds
    assert default_policy(manifest).criterion == profile.default_criterion


def test_a_bundle_without_operating_points_falls_back_to_half_a_point_below_the_best() -> None:
    def point(macs: float, accuracy: float, threshold: float) -> ProfilePoint:
        return ProfilePoint(
            thresholds=[threshold, None], exit_rates=[0.5, 0.0, 0.5], expected_macs=macs, accuracy=accuracy
        )

    front = [point(20, 0.95, 0.5), point(30, 0.986, 0.8), point(40, 0.989, 0.9), point(60, 0.99, 0.99)]
    legacy = ExitPolicyProfile(default_criterion="margin", profiles={"margin": front})
    manifest = Manifest.model_validate(
        _reference_manifest().model_dump() | {"exit_policy": legacy.model_dump()}
    )
    assert default_policy(manifest).thresholds == [0.8, None]
    with pytest.raises(ValueError, match="no threshold profile for criterion 'entropy'"):
        default_policy(manifest, "entropy")


def test_the_reference_bundles_operating_points_are_what_the_offline_report_measured() -> None:
    """The static policy a device starts with is the point whose test-split saving is published."""
    for model in ("mnist", "cifar10"):
        manifest = _reference_manifest(model)
        report = json.loads((REPORTS / f"offline-{model}" / "report.json").read_text())
        measured = report["splits"]["test"]["criteria"]
        assert sorted(manifest.exit_policy.operating_points) == sorted(measured)
        for name, point in manifest.exit_policy.operating_points.items():
            published = measured[name]["operating_point"]
            assert published["thresholds"] == point.thresholds, (model, name)
            assert published["validation_loss_points"] == pytest.approx(100 * point.loss), (model, name)


def _reference_manifest(model: str = "mnist") -> Manifest:
    from distree_mqtt.bundle import load_manifest

    return load_manifest(reference_bundle(model))
