"""The multi-exit network: a sequence of stages, each a backbone slice followed by its exit head.

A stage is the unit one device runs: it takes the previous stage's features (or the image for
stage 0) and yields the features it hands on plus the output of its own exit head.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class ExitOutput:
    """What one exit head produces for a batch."""

    logits: torch.Tensor  # (batch, classes)
    embedding: torch.Tensor  # (batch, embedding_dim): pooled features the head classified


class ExitHead(nn.Module):
    """Classifier attached to a stage's output.

    Early heads add one 3x3 convolution before pooling: a bare pool+linear on shallow features
    is a weak classifier, and the convolution is cheap next to the stage it follows. On feature
    maps larger than 8x8 it runs at half resolution, either strided or after a 2x2 max-pool
    ("max_pool": on the CIFAR-10 conv-group net's 15x15 maps, 23% fewer MACs).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int | None,
        spatial_size: int,
        preactivated: bool = True,
        downsampling: Literal["strided_conv", "max_pool"] = "strided_conv",
        pooling: Literal["avg", "max"] = "avg",
        logit_scale: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if preactivated:
            # Pre-activation residual stages end in an un-normalised sum.
            layers += [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)]
        embedding_dim = in_channels
        if width is not None:
            halve = spatial_size > 8
            if halve and downsampling == "max_pool":
                layers.append(nn.MaxPool2d(2))
            stride = 2 if halve and downsampling == "strided_conv" else 1
            layers += [
                nn.Conv2d(in_channels, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            embedding_dim = width
        layers += [nn.AdaptiveAvgPool2d(1) if pooling == "avg" else nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> ExitOutput:
        embedding = self.features(x)
        logits = self.classifier(embedding)
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
        return ExitOutput(logits=logits, embedding=embedding)


class Stage(nn.Module):
    """One backbone slice and its exit head."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ExitOutput]:
        features = self.body(x)
        return features, self.head(features)


class MultiExitNetwork(nn.Module):
    """Stages run in order; every stage's head is an exit, the last one is the final classifier."""

    def __init__(self, stages: list[Stage]) -> None:
        super().__init__()
        if not stages:
            raise ValueError("a multi-exit network needs at least one stage")
        self.stages = nn.ModuleList(stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage(self, stage_index: int) -> Stage:
        stage = self.stages[stage_index]
        assert isinstance(stage, Stage)
        return stage

    @property
    def embedding_dims(self) -> list[int]:
        dims = []
        for index in range(self.num_stages):
            head = self.stage(index).head
            assert isinstance(head, ExitHead)
            dims.append(head.embedding_dim)
        return dims

    def iter_exits(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, ExitOutput]]:
        """Yield (stage_index, features, exit output) stage by stage, as devices would."""
        for stage_index, stage in enumerate(self.stages):
            x, exit_output = stage(x)
            yield stage_index, x, exit_output

    def forward(self, x: torch.Tensor) -> list[ExitOutput]:
        return [exit_output for _, _, exit_output in self.iter_exits(x)]
