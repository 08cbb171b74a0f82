from __future__ import annotations

import torch

from distree_mqtt.model.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def _overconfident(seed: int, count: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """A classifier right ~80% of the time whose logits are scaled up 4x (overconfident)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    logits = torch.randn(count, 10, generator=generator)
    logits[torch.arange(count), labels] += 2.5
    return 4.0 * logits, labels


def test_temperature_scaling_lowers_validation_and_test_nll_and_ece() -> None:
    val_logits, val_labels = _overconfident(0)
    test_logits, test_labels = _overconfident(1)
    temperature = fit_temperature(val_logits, val_labels)
    assert temperature > 1.3  # overconfidence is softened, not sharpened
    for logits, labels in ((val_logits, val_labels), (test_logits, test_labels)):
        assert negative_log_likelihood(logits, labels, temperature) < 0.95 * negative_log_likelihood(
            logits, labels
        )
        assert expected_calibration_error(logits, labels, temperature) < 0.5 * expected_calibration_error(
            logits, labels
        )


def test_ece_is_zero_for_a_perfectly_calibrated_certain_classifier() -> None:
    labels = torch.arange(10).repeat(10)
    logits = torch.full((100, 10), -50.0)
    logits[torch.arange(100), labels] = 50.0
    assert expected_calibration_error(logits, labels) < 1e-9
