"""The joint multi-exit objective: weighted exit losses, distillation and feature transfer.

Following the DistrEE training objective, every exit is trained on the labels; earlier exits
also learn from the final exit's softened predictions (knowledge distillation) and, optionally,
pull their pooled features towards the final stage's (feature transfer). The final exit is the
teacher, so its outputs are detached in both extra terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from distree_mqtt.model.multi_exit import ExitOutput


@dataclass(frozen=True)
class LossWeights:
    exit_weights: list[float]
    distillation_weight: float  # share of an early exit's loss taken by distillation, in [0, 1]
    distillation_temperature: float
    feature_transfer_weight: float
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class LossBreakdown:
    total: torch.Tensor
    per_exit: list[float]
    distillation: float
    feature_transfer: float


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None  # type: ignore[attr-defined]


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back through it is multiplied by `scale`.

    Between a stage's body and its early exit head this is the "gradient equilibrium" of
    multi-exit training: an early head still learns at full rate, but pulls less on the shared
    backbone, whose features the later exits need (0 trains the head on fixed features).
    """
    if scale == 1.0:
        return x
    return _ScaleGradient.apply(x, scale)  # type: ignore[no-any-return]


class FeatureProjectors(nn.Module):
    """Training-only maps from each early exit's embedding into the final exit's space."""

    def __init__(self, embedding_dims: list[int]) -> None:
        super().__init__()
        final_dim = embedding_dims[-1]
        self.maps = nn.ModuleList(nn.Linear(dim, final_dim) for dim in embedding_dims[:-1])


def multi_exit_loss(
    outputs: list[ExitOutput],
    labels: torch.Tensor,
    weights: LossWeights,
    projectors: FeatureProjectors | None,
) -> LossBreakdown:
    final = outputs[-1]
    teacher_logits = final.logits.detach()
    teacher_embedding = F.normalize(final.embedding.detach(), dim=1)
    temperature = weights.distillation_temperature
    alpha = weights.distillation_weight
    total = torch.zeros((), device=labels.device)
    per_exit: list[float] = []
    distillation_sum = 0.0
    transfer_sum = 0.0
    for index, output in enumerate(outputs):
        cross_entropy = F.cross_entropy(output.logits, labels, label_smoothing=weights.label_smoothing)
        per_exit.append(float(cross_entropy.detach()))
        exit_loss = cross_entropy
        is_final = index == len(outputs) - 1
        if not is_final and alpha > 0:
            distillation = F.kl_div(
                F.log_softmax(output.logits / temperature, dim=1),
                F.log_softmax(teacher_logits / temperature, dim=1),
                log_target=True,
                reduction="batchmean",
            ) * (temperature**2)
            distillation_sum += float(distillation.detach())
            exit_loss = (1 - alpha) * cross_entropy + alpha * distillation
        if not is_final and projectors is not None and weights.feature_transfer_weight > 0:
            projected = F.normalize(projectors.maps[index](output.embedding), dim=1)
            transfer = (1 - (projected * teacher_embedding).sum(dim=1)).mean()
            transfer_sum += float(transfer.detach())
            exit_loss = exit_loss + weights.feature_transfer_weight * transfer
        total = total + weights.exit_weights[index] * exit_loss
    return LossBreakdown(total, per_exit, distillation_sum, transfer_sum)
