"""How raw images become the tensor stage 0 expects."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field


class InputSpec(BaseModel):
    """Shape, colour and normalisation of the network input; stored in every bundle."""

    model_config = ConfigDict(extra="forbid")

    shape: tuple[int, int, int] = Field(title="(channels, height, width)")
    color: Literal["gray", "rgb"] = Field(title="Channel meaning; rgb is in R, G, B order")
    mean: list[float] = Field(title="Per-channel mean of pixel/255")
    std: list[float] = Field(title="Per-channel standard deviation of pixel/255")
    class_names: list[str] = Field(title="Label names, index = class id")

    @classmethod
    def from_images(cls, images: np.ndarray, class_names: list[str]) -> InputSpec:
        """Fit the normalisation to (N, C, H, W) uint8 training images."""
        scaled = images.astype(np.float64) / 255.0
        channels = images.shape[1]
        return cls(
            shape=(channels, images.shape[2], images.shape[3]),
            color="gray" if channels == 1 else "rgb",
            mean=[float(v) for v in scaled.mean(axis=(0, 2, 3))],
            std=[float(max(v, 1e-3)) for v in scaled.std(axis=(0, 2, 3))],
            class_names=class_names,
        )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 normalised."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std
