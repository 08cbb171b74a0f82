from __future__ import annotations

import pytest
import torch
from torch import nn

from distree_mqtt.model import ModelSpec, build_network, build_stage
from distree_mqtt.model.flops import exit_macs, no_exit_macs, stage_costs
from distree_mqtt.model.torchvision_stages import named_units, split_named_units


@pytest.mark.parametrize(
    ("input_shape", "depth", "widen", "features"),
    [
        ((1, 28, 28), 10, 1, [(16, 28, 28), (32, 14, 14), (64, 7, 7)]),
        ((3, 32, 32), 16, 2, [(32, 32, 32), (64, 16, 16), (128, 8, 8)]),
    ],
)
def test_stage_shapes_chain_for_gray_and_rgb(input_shape, depth, widen, features) -> None:
    spec = ModelSpec(depth=depth, widen_factor=widen, input_shape=input_shape)
    network = build_network(spec).eval()
    seen = []
    for stage_index, stage_features, output in network.iter_exits(torch.randn(4, *input_shape)):
        seen.append(tuple(stage_features.shape[1:]))
        assert output.logits.shape == (4, 10), stage_index
        assert output.embedding.shape[0] == 4
    assert seen == features


def test_stage_blocks_moves_the_cuts_and_costs() -> None:
    even = ModelSpec(depth=16, widen_factor=1, input_shape=(1, 28, 28))
    uneven = ModelSpec(depth=16, widen_factor=1, input_shape=(1, 28, 28), stage_blocks=[1, 2, 3])
    even_costs = stage_costs(build_network(even), even.input_shape)
    uneven_costs = stage_costs(build_network(uneven), uneven.input_shape)
    assert uneven_costs[0].body_macs < even_costs[0].body_macs
    assert sum(c.body_macs for c in uneven_costs) == sum(c.body_macs for c in even_costs)


def test_flop_counts_match_a_hand_count_of_the_stem() -> None:
    spec = ModelSpec(depth=10, widen_factor=1, input_shape=(1, 28, 28))
    costs = stage_costs(build_network(spec), spec.input_shape)
    # Stem: 3x3 conv 1 -> 16 channels at 28x28, then one 16 -> 16 block of two 3x3 convs.
    assert costs[0].body_macs == 28 * 28 * 16 * 9 * (1 + 16 + 16)
    spent = exit_macs(costs)
    assert spent == sorted(spent)
    assert no_exit_macs(costs) < spent[-1]  # the plain network skips the early heads


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"depth": 12}, "6n\\+4"),
        ({"stage_blocks": [1, 1, 2]}, "add up"),
        ({"head_widths": [8]}, "head_widths"),
        ({"backbone": "torchvision"}, "torchvision_name"),
    ],
)
def test_invalid_specs_are_rejected_with_the_reason(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSpec(**({"depth": 10} | changes))


def test_build_stage_allocates_nothing_until_weights_are_assigned() -> None:
    stage = build_stage(ModelSpec(depth=10, widen_factor=1), 1)
    assert all(p.device.type == "meta" for p in stage.parameters())
    with pytest.raises(ValueError, match="stage 3 does not exist"):
        build_stage(ModelSpec(depth=10, widen_factor=1), 3)


class TinyResNetLike(nn.Module):
    """Mirrors torchvision's ResNet child names without needing torchvision."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Conv2d(8, 8, 3, 1, 1)
        self.layer2 = nn.Conv2d(8, 16, 3, 2, 1)
        self.layer3 = nn.Conv2d(16, 32, 3, 2, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 1000)


class TinyMobileNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(16, 24, 3, 2, 1)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(24, 1000)


def test_torchvision_style_models_split_by_named_children() -> None:
    units = named_units(TinyResNetLike())
    assert [name for name, _ in units] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    groups = split_named_units(units, ["layer1", "layer2"])
    assert [len(group) for group in groups] == [5, 1, 1]
    mobile = named_units(TinyMobileNetLike())
    assert [name for name, _ in mobile] == ["features.0", "features.1", "features.2"]
    with pytest.raises(ValueError, match="split point 'layer9' is not a child"):
        split_named_units(units, ["layer9"])
    with pytest.raises(ValueError, match="in order"):
        split_named_units(units, ["layer2", "layer1"])
    with pytest.raises(ValueError, match="leave a last stage"):
        split_named_units(units, ["layer3"])


def test_torchvision_backbone_builds_stages_with_fresh_heads(monkeypatch) -> None:
    import distree_mqtt.model.spec as spec_module

    monkeypatch.setattr(spec_module, "load_torchvision_model", lambda name, pretrained: TinyResNetLike())
    spec = ModelSpec(
        backbone="torchvision",
        torchvision_name="resnet18",
        split_points=["layer1", "layer2"],
        input_shape=(3, 32, 32),
    )
    network = build_network(spec).eval()
    outputs = network(torch.randn(2, 3, 32, 32))
    assert [tuple(o.logits.shape) for o in outputs] == [(2, 10)] * 3
