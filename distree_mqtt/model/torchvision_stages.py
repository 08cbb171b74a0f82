"""Turn a torchvision-style model into stages by named split points.

A torchvision classifier is a sequence of named children ending in pooling and a classifier
(`avgpool`/`fc` for ResNets, `avgpool`/`classifier` for MobileNets, whose body sits in a
`features` Sequential). We flatten the body into named units, cut it after the named split
points and attach our own exit heads; the original classifier is replaced because the class
count usually differs.
"""

from __future__ import annotations

import itertools

from torch import nn

CLASSIFIER_NAMES = ("avgpool", "fc", "classifier", "dropout", "flatten")


def named_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's body as (name, module) in execution order, without pooling and classifier."""
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in CLASSIFIER_NAMES:
            continue
        if name == "features" and isinstance(child, nn.Sequential):
            units.extend((f"features.{sub}", module) for sub, module in child.named_children())
        else:
            units.append((name, child))
    if not units:
        raise ValueError(f"{type(model).__name__} has no body children to split")
    return units


def split_named_units(units: list[tuple[str, nn.Module]], split_points: list[str]) -> list[list[nn.Module]]:
    """Cut the unit list after each named split point (in order)."""
    names = [name for name, _ in units]
    cut_indices: list[int] = []
    for point in split_points:
        if point not in names:
            raise ValueError(f"split point {point!r} is not a child of the model; known: {', '.join(names)}")
        cut_indices.append(names.index(point) + 1)
    if cut_indices != sorted(set(cut_indices)) or (cut_indices and cut_indices[-1] >= len(units)):
        raise ValueError(f"split points must be distinct, in order and leave a last stage: {split_points}")
    bounds = [0, *cut_indices, len(units)]
    return [[module for _, module in units[a:b]] for a, b in itertools.pairwise(bounds)]


def load_torchvision_model(name: str, pretrained: bool) -> nn.Module:
    """Build a torchvision model by name; pretrained weights only when asked (never in tests)."""
    try:
        import torchvision  # type: ignore[import-untyped]
    except ImportError as error:  # optional dependency
        raise RuntimeError(
            "backbone 'torchvision' needs the torchvision package: pip install torchvision"
        ) from error
    weights = "DEFAULT" if pretrained else None
    model: nn.Module = torchvision.models.get_model(name, weights=weights)
    return model
