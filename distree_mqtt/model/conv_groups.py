"""A compact conv-group backbone: a patch-whitening stem, then groups of two convolutions.

This is the design of the fast CIFAR-10 training baselines (Page's DAWNBench ResNet-9 and
Jordan's airbench): few, wide layers; each group is conv -> max-pool -> BN -> GELU -> conv ->
BN -> GELU; the stem is a 2x2 convolution fixed to whiten image patches, computed from the
training data before training starts. It learns in far fewer epochs than a deep, narrow ResNet,
which is what makes CPU-only training of a >= 90% CIFAR-10 model practical. Every group is a
unit the stages are cut from.
"""

from __future__ import annotations

import torch
from torch import nn

WHITENING_PATCH = 2


def whitening_stem(in_channels: int) -> nn.Conv2d:
    """The stem: one filter per patch eigenvector and its negation (so GELU keeps both signs)."""
    dims = in_channels * WHITENING_PATCH * WHITENING_PATCH
    stem = nn.Conv2d(in_channels, 2 * dims, WHITENING_PATCH, padding=0, bias=True)
    stem.weight.requires_grad_(False)  # fixed by the data (init_whitening), never trained
    return stem


def conv_group(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(out_channels),
        nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.GELU(),
    )


def conv_group_units(group_widths: list[int], in_channels: int) -> list[nn.Module]:
    """The backbone as a flat list: the stem (with its activation), then every group in order."""
    if not group_widths or min(group_widths) < 1:
        raise ValueError(f"conv_groups needs at least one positive group width, got {group_widths}")
    stem = whitening_stem(in_channels)
    units: list[nn.Module] = [nn.Sequential(stem, nn.GELU())]
    channels = stem.out_channels
    for width in group_widths:
        units.append(conv_group(channels, width))
        channels = width
    return units


def stem_of(first_body: nn.Module) -> nn.Conv2d:
    """The whitening convolution at the head of stage 0's body (built by conv_group_units)."""
    stem = first_body[0][0]  # type: ignore[index]
    if not isinstance(stem, nn.Conv2d):
        raise TypeError("stage 0 does not start with a conv_groups whitening stem")
    return stem


@torch.no_grad()
def init_whitening(stem: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the stem to whiten 2x2 patches of normalised (N, C, H, W) training images.

    Each filter projects a patch onto one eigenvector of the patch covariance, scaled by the
    inverse square root of its eigenvalue; the second half of the filters are the negations.
    """
    channels = images.shape[1]
    patches = images.float().unfold(2, WHITENING_PATCH, 1).unfold(3, WHITENING_PATCH, 1)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * WHITENING_PATCH**2).double()
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
    filters = eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
    filters = filters.reshape(-1, channels, WHITENING_PATCH, WHITENING_PATCH).to(stem.weight.dtype)
    stem.weight.copy_(torch.cat([filters, -filters]))
    if stem.bias is not None:
        stem.bias.zero_()
