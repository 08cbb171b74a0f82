"""The shipped reference bundle is what the demo and the runtime load: check it for real."""

from __future__ import annotations

from distree_mqtt.bundle import load_network
from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.model.criteria import criterion_names
from distree_mqtt.model.training import exit_accuracies
from distree_mqtt.reference import reference_bundle


def test_reference_mnist_bundle_meets_its_accuracy_target() -> None:
    manifest, network = load_network(reference_bundle("mnist"))
    data = load_dataset(DataSpec(name="mnist"))
    accuracies = exit_accuracies(network, data.test, manifest.input)
    assert accuracies[-1] >= 0.985
    assert accuracies == sorted(accuracies)  # later exits see more of the network
    assert sorted(manifest.exit_policy.profiles) == sorted(criterion_names())
    for front in manifest.exit_policy.profiles.values():
        assert all(abs(sum(point.exit_rates) - 1) < 1e-9 for point in front)
    total_bytes = sum((reference_bundle("mnist") / s.weights_file).stat().st_size for s in manifest.stages)
    assert total_bytes < 1_000_000


def test_reference_cifar10_bundle_verifies_and_chains() -> None:
    """The CIFAR-10 data is not shipped, so this checks integrity and shapes, not accuracy
    (the accuracy is in docs/benchmarks/offline-cifar10)."""
    import torch

    manifest, network = load_network(reference_bundle("cifar10"))
    assert manifest.input.shape == (3, 32, 32) and len(manifest.input.class_names) == 10
    with torch.no_grad():
        outputs = network(torch.randn(2, 3, 32, 32))
    assert [tuple(o.logits.shape) for o in outputs] == [(2, 10)] * 3
    assert manifest.exit_policy.default_criterion in manifest.exit_policy.profiles
