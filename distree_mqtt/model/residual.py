"""CIFAR-style pre-activation residual backbones (the ResNet / WideResNet family).

WRN-d-k has (d - 4) / 6 basic blocks in each of three groups of width 16k, 32k and 64k, the
family the DistrEE paper evaluates on CIFAR-10. The same code serves 28x28 grayscale and
32x32 RGB inputs: only the stem's input channels change.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice, with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(F.relu(self.bn2(out)))
        residual = x if self.shortcut is None else self.shortcut(activated)
        return out + residual


def wide_resnet_units(depth: int, widen_factor: int, in_channels: int) -> list[nn.Module]:
    """The backbone as a flat list: the stem, then every residual block in order."""
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(f"wide_resnet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    if widen_factor < 1:
        raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
    blocks_per_group = (depth - 4) // 6
    widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    units: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)]
    channels = 16
    for group, width in enumerate(widths):
        for block in range(blocks_per_group):
            stride = 2 if (group > 0 and block == 0) else 1
            units.append(PreActBlock(channels, width, stride))
            channels = width
    return units


def even_split_points(num_blocks: int, num_stages: int) -> list[int]:
    """Indices (into the block list) after which to cut; three stages cut at group boundaries."""
    if not 1 <= num_stages <= num_blocks:
        raise ValueError(f"cannot cut {num_blocks} blocks into {num_stages} stages")
    return [round(i * num_blocks / num_stages) for i in range(1, num_stages)]
