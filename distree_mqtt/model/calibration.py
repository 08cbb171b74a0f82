"""Per-exit temperature scaling (Guo et al., 2017) and the calibration metrics we report."""

from __future__ import annotations

import itertools

import torch
from torch.nn import functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iterations: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on held-out data."""
    log_temperature = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [log_temperature], lr=0.1, max_iter=iterations, line_search_fn="strong_wolfe"
    )
    logits = logits.detach().double()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_temperature.double().exp(), labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    temperature = float(log_temperature.detach().exp())
    # Guard against a degenerate fit (e.g. perfectly separated validation data).
    return min(max(temperature, 0.05), 20.0)


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels))


def expected_calibration_error(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, bins: int = 15
) -> float:
    """Equal-width-bin ECE of the top-1 confidence."""
    probabilities = F.softmax(logits.double() / temperature, dim=1)
    confidence, prediction = probabilities.max(dim=1)
    correct = (prediction == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    error = torch.zeros((), dtype=torch.float64)
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.double().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
    return float(error)
