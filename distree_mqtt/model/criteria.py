"""Exit criteria: when is an exit's prediction good enough to stop?

Every criterion has one interface: given the calibrated outputs of this exit and of the exits
before it, return a score per sample; the sample exits when score >= threshold. Scores grow
with confidence, so raising a threshold never makes more samples exit. Criteria register by
name so bundles, configs and the CLI can name them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class ExitObservation:
    """One exit's calibrated output for a batch."""

    logits: torch.Tensor  # (batch, classes), already divided by the exit's temperature
    embedding: torch.Tensor | None = None  # (batch, dim)

    @property
    def probabilities(self) -> torch.Tensor:
        return F.softmax(self.logits.float(), dim=1)


class ExitCriterion(ABC):
    """Score of the newest exit in `history` (history[-1]); higher means more ready to exit."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def score(self, history: Sequence[ExitObservation]) -> torch.Tensor: ...


_REGISTRY: dict[str, type[ExitCriterion]] = {}


def register(cls: type[ExitCriterion]) -> type[ExitCriterion]:
    _REGISTRY[cls.name] = cls
    return cls


def get_criterion(name: str) -> ExitCriterion:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown exit criterion {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def criterion_names() -> list[str]:
    return list(_REGISTRY)


@register
class MaxSoftmax(ExitCriterion):
    name = "max_softmax"
    description = "calibrated top-1 probability"

    def score(self, history: Sequence[ExitObservation]) -> torch.Tensor:
        return history[-1].probabilities.max(dim=1).values


@register
class Entropy(ExitCriterion):
    name = "entropy"
    description = "1 - normalised entropy of the calibrated prediction (BranchyNet, DDNN)"

    def score(self, history: Sequence[ExitObservation]) -> torch.Tensor:
        probabilities = history[-1].probabilities
        entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=1)
        return 1.0 - entropy / math.log(probabilities.shape[1])


@register
class Margin(ExitCriterion):
    name = "margin"
    description = "gap between the two largest calibrated probabilities"

    def score(self, history: Sequence[ExitObservation]) -> torch.Tensor:
        top2 = history[-1].probabilities.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]


@register
class Patience(ExitCriterion):
    """PABEE-style patience: how many consecutive exits, ending here, agree on the label.

    The score is (run length - 1) + top-1 probability, so an integer threshold t means "t+1
    exits agree" and the fractional part adds a confidence floor among equally patient samples.
    """

    name = "patience"
    description = "consecutive agreeing exits, confidence as tie-break"

    def score(self, history: Sequence[ExitObservation]) -> torch.Tensor:
        newest = history[-1].probabilities
        label = history[-1].logits.argmax(dim=1)
        run = torch.ones_like(label, dtype=torch.float32)
        still_agreeing = torch.ones_like(label, dtype=torch.bool)
        for earlier in reversed(history[:-1]):
            still_agreeing &= earlier.logits.argmax(dim=1) == label
            run += still_agreeing.float()
        return (run - 1.0) + newest.max(dim=1).values


@register
class FeatureDifference(ExitCriterion):
    """DistrEE-style convergence: a prediction that stopped changing between exits is final.

    Score = overlap of consecutive calibrated predictions, sum_c min(p_k, p_{k-1}) = 1 - total
    variation, highest when the newer exit merely confirms the older one. Agreement with an
    unsure earlier exit is not convergence, so the overlap is taken with the newest exit's
    distribution (both must put mass on the same classes). The first exit has no predecessor
    and scores by its calibrated top-1 probability.
    """

    name = "feature_difference"
    description = "1 - total variation between consecutive exits' calibrated predictions"

    def score(self, history: Sequence[ExitObservation]) -> torch.Tensor:
        newest = history[-1].probabilities
        if len(history) == 1:
            return newest.max(dim=1).values
        previous = history[-2].probabilities
        return torch.minimum(newest, previous).sum(dim=1)
