"""Shared fixtures: small networks and bundles built in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distree_mqtt.bundle import write_bundle
from distree_mqtt.bundle.manifest import (
    CalibrationEntry,
    ExitPolicyProfile,
    Manifest,
    OperatingPoint,
    ProfilePoint,
)
from distree_mqtt.model import ModelSpec, MultiExitNetwork, build_network
from distree_mqtt.model.input_spec import InputSpec

# Small models: one thread each avoids oversubscribing the two CI cores.
torch.set_num_threads(1)


@pytest.fixture
def tiny_spec() -> ModelSpec:
    return ModelSpec(depth=10, widen_factor=1, num_stages=3, input_shape=(1, 28, 28), num_classes=10)


@pytest.fixture
def tiny_network(tiny_spec: ModelSpec) -> MultiExitNetwork:
    torch.manual_seed(0)
    network = build_network(tiny_spec)
    # Non-trivial batch-norm statistics so eval-mode numerics are exercised.
    network.train()
    with torch.no_grad():
        network(torch.randn(16, *tiny_spec.input_shape))
    return network.eval()


def make_bundle(directory: Path, spec: ModelSpec, network: MultiExitNetwork) -> Manifest:
    input_spec = InputSpec(
        shape=spec.input_shape, color="gray", mean=[0.13], std=[0.3], class_names=[str(i) for i in range(10)]
    )
    calibration = [
        CalibrationEntry(temperature=1.5, nll_before=1.0, nll_after=0.9, ece_before=0.1, ece_after=0.05)
        for _ in range(spec.num_stages)
    ]
    point = ProfilePoint(thresholds=[0.9, 0.8], exit_rates=[0.5, 0.3, 0.2], expected_macs=1e6, accuracy=0.9)
    chosen = OperatingPoint(**point.model_dump(), loss=0.003, loss_standard_error=0.001)
    policy = ExitPolicyProfile(
        default_criterion="max_softmax",
        profiles={"max_softmax": [point]},
        operating_points={"max_softmax": chosen},
    )
    return write_bundle(directory, "tiny", spec, input_spec, network, calibration, policy)


@pytest.fixture
def tiny_bundle(tmp_path: Path, tiny_spec: ModelSpec, tiny_network: MultiExitNetwork) -> Path:
    make_bundle(tmp_path / "bundle", tiny_spec, tiny_network)
    return tmp_path / "bundle"
