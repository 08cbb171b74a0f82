"""The architecture description a bundle stores, and the builders that turn it into modules."""

from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from torch import nn

from distree_mqtt.model.conv_groups import conv_group_units
from distree_mqtt.model.multi_exit import ExitHead, MultiExitNetwork, Stage
from distree_mqtt.model.residual import even_split_points, wide_resnet_units
from distree_mqtt.model.torchvision_stages import load_torchvision_model, named_units, split_named_units

# Options newer than bundles already shipped: left out of the dump while at their defaults.
_LEFT_OUT_AT_DEFAULT = ("exit_head_downsampling", "final_head_pooling", "final_logit_scale")


class ModelSpec(BaseModel):
    """Everything needed to rebuild a multi-exit network (its weights live in the bundle)."""

    model_config = ConfigDict(extra="forbid")

    backbone: Literal["wide_resnet", "conv_groups", "torchvision"] = Field(
        "wide_resnet", title="Backbone family"
    )
    depth: int = Field(16, title="WideResNet depth (6n+4)", ge=10)
    widen_factor: int = Field(2, title="WideResNet width multiplier", ge=1, le=16)
    group_widths: list[int] = Field(
        default_factory=lambda: [64, 256, 256], title="conv_groups: output channels of each group"
    )
    torchvision_name: str | None = Field(
        None, title="torchvision model name, e.g. resnet18 or mobilenet_v3_small"
    )
    split_points: list[str] = Field(
        default_factory=list, title="torchvision children after which to cut (N-1 names)"
    )
    num_stages: int = Field(3, title="Number of stages (devices)", ge=1, le=16)
    stage_blocks: list[int] | None = Field(
        None,
        title=(
            "wide_resnet residual blocks (conv_groups: groups) per stage "
            "(default: equal; three stages = the three groups)"
        ),
    )
    input_shape: tuple[int, int, int] = Field((3, 32, 32), title="Input (channels, height, width)")
    num_classes: int = Field(10, title="Number of classes", ge=2)
    head_widths: list[int] | None = Field(
        None, title="Convolution width of each early exit head (default: twice the stage width)"
    )
    exit_head_downsampling: Literal["strided_conv", "max_pool"] = Field(
        "strided_conv",
        title=(
            "How an early exit head halves a feature map larger than 8x8: a stride-2 convolution, "
            "or a 2x2 max-pool before it (cheaper)"
        ),
    )
    final_head_pooling: Literal["avg", "max"] = Field(
        "avg",
        title=(
            "Global pooling of the final exit: average, or max (the head of the fast CIFAR-10 "
            "baselines, which pairs it with final_logit_scale = 0.125)"
        ),
    )
    final_logit_scale: float = Field(
        1.0,
        title=(
            "Constant multiplier of the final exit's logits; below 1 it slows how fast the final "
            "classifier's outputs grow under SGD"
        ),
        gt=0,
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.backbone == "torchvision":
            if not self.torchvision_name:
                raise ValueError("backbone 'torchvision' needs torchvision_name")
            if len(self.split_points) != self.num_stages - 1:
                raise ValueError(
                    f"{self.num_stages} stages need {self.num_stages - 1} split_points, "
                    f"got {len(self.split_points)}"
                )
        elif self.backbone == "wide_resnet" and (self.depth - 4) % 6 != 0:
            raise ValueError(f"wide_resnet depth must be 6n+4 (10, 16, 22, 28, ...), got {self.depth}")
        elif self.backbone == "conv_groups" and (
            self.num_stages > len(self.group_widths) or min(self.group_widths) < 1
        ):
            raise ValueError(
                f"conv_groups needs positive group_widths, at least one per stage ({self.num_stages})"
            )
        if self.stage_blocks is not None:
            if len(self.stage_blocks) != self.num_stages or min(self.stage_blocks) < 1:
                raise ValueError(f"stage_blocks needs {self.num_stages} positive entries")
            if sum(self.stage_blocks) != self.backbone_blocks:
                raise ValueError(
                    f"stage_blocks must add up to the {self.backbone_blocks} blocks of the backbone"
                )
        if self.head_widths is not None and len(self.head_widths) != self.num_stages - 1:
            raise ValueError(f"head_widths needs {self.num_stages - 1} entries (one per early exit)")
        return self

    @model_serializer(mode="wrap")
    def _stable_identity(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Bundles hash this dump: a field added later (for one backbone, or a new option) must
        # not change the identity, and so the content hash, of bundles that do not use it.
        data: dict[str, Any] = handler(self)
        if self.backbone != "conv_groups":
            data.pop("group_widths", None)
        for name in _LEFT_OUT_AT_DEFAULT:
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name, None)
        return data

    @property
    def backbone_blocks(self) -> int:
        """How many units the stages are cut from (residual blocks, or conv groups)."""
        if self.backbone == "conv_groups":
            return len(self.group_widths)
        return 3 * ((self.depth - 4) // 6)


def _stage_bodies(spec: ModelSpec, pretrained: bool) -> tuple[list[nn.Module], bool]:
    """The backbone cut into stage bodies, and whether its stages end pre-activation."""
    if spec.backbone == "torchvision":
        assert spec.torchvision_name is not None
        model = load_torchvision_model(spec.torchvision_name, pretrained)
        groups = split_named_units(named_units(model), spec.split_points)
        return [nn.Sequential(*group) for group in groups], False
    if spec.backbone == "wide_resnet":
        units = wide_resnet_units(spec.depth, spec.widen_factor, spec.input_shape[0])
    else:
        units = conv_group_units(spec.group_widths, spec.input_shape[0])
    stem, blocks = units[0], units[1:]
    if spec.stage_blocks is not None:
        cuts = [0, *itertools.accumulate(spec.stage_blocks)]
    else:
        cuts = [0, *even_split_points(len(blocks), spec.num_stages), len(blocks)]
    unit_groups = [blocks[a:b] for a, b in itertools.pairwise(cuts)]
    unit_groups[0] = [stem, *unit_groups[0]]
    # Residual blocks end in an un-normalised sum; conv groups end in BN -> GELU.
    return [nn.Sequential(*group) for group in unit_groups], spec.backbone == "wide_resnet"


def build_network(spec: ModelSpec, pretrained: bool = False) -> MultiExitNetwork:
    """Build the whole network with exit heads sized by a dry run through the bodies."""
    bodies, preactivated = _stage_bodies(spec, pretrained)
    probe = torch.zeros(1, *spec.input_shape, device=_device_of(bodies[0]))
    stages: list[Stage] = []
    was_training = [body.training for body in bodies]
    for index, body in enumerate(bodies):
        body.eval()
        with torch.no_grad():
            probe = body(probe)
        body.train(was_training[index])
        channels, size = int(probe.shape[1]), int(probe.shape[-1])
        is_last = index == len(bodies) - 1
        if is_last:
            width = None
        elif spec.head_widths is not None:
            width = spec.head_widths[index]
        else:
            width = 2 * channels
        head = ExitHead(
            channels,
            spec.num_classes,
            width,
            size,
            preactivated=preactivated,
            downsampling=spec.exit_head_downsampling,
            pooling=spec.final_head_pooling if is_last else "avg",
            logit_scale=spec.final_logit_scale if is_last else 1.0,
        )
        stages.append(Stage(body, head))
    return MultiExitNetwork(stages)


def build_stage(spec: ModelSpec, stage_index: int) -> Stage:
    """Build one stage's modules without allocating weights (meta device); load with assign=True."""
    if not 0 <= stage_index < spec.num_stages:
        raise ValueError(f"stage {stage_index} does not exist (the model has {spec.num_stages})")
    with torch.device("meta"):
        network = build_network(spec, pretrained=False)
    stage = network.stages[stage_index]
    assert isinstance(stage, Stage)
    return stage


def _device_of(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")
