"""Every exit's logits and embeddings on a split, computed once and reused by every sweep."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from distree_mqtt.data import ImageSet
from distree_mqtt.model.criteria import ExitCriterion, ExitObservation
from distree_mqtt.model.input_spec import InputSpec
from distree_mqtt.model.multi_exit import MultiExitNetwork


@dataclass(frozen=True)
class ExitCache:
    logits: list[torch.Tensor]  # per exit, (N, classes), uncalibrated
    embeddings: list[torch.Tensor]  # per exit, (N, dim)
    labels: torch.Tensor  # (N,)

    @property
    def num_exits(self) -> int:
        return len(self.logits)

    def correct(self) -> np.ndarray:
        """(exits, N) bool: is exit k right on sample i."""
        return np.stack([(logits.argmax(1) == self.labels).numpy() for logits in self.logits])

    def observations(self, temperatures: list[float]) -> list[ExitObservation]:
        return [
            ExitObservation(logits=logits / temperature, embedding=embedding)
            for logits, embedding, temperature in zip(self.logits, self.embeddings, temperatures, strict=True)
        ]

    def scores(self, criterion: ExitCriterion, temperatures: list[float]) -> np.ndarray:
        """(exits - 1, N): the criterion's score at every early exit."""
        observations = self.observations(temperatures)
        return np.stack(
            [criterion.score(observations[: k + 1]).numpy() for k in range(self.num_exits - 1)]
        ).reshape(self.num_exits - 1, -1)

    def save(self, path: Path) -> None:
        arrays = {f"logits_{k}": t.numpy() for k, t in enumerate(self.logits)}
        arrays |= {f"embedding_{k}": t.numpy() for k, t in enumerate(self.embeddings)}
        arrays["labels"] = self.labels.numpy()
        np.savez_compressed(path, allow_pickle=False, **arrays)


@torch.no_grad()
def collect_exits(
    network: MultiExitNetwork,
    images: ImageSet,
    input_spec: InputSpec,
    batch_size: int = 500,
    show_progress: bool = True,
) -> ExitCache:
    network.eval()
    logits: list[list[torch.Tensor]] = [[] for _ in range(network.num_stages)]
    embeddings: list[list[torch.Tensor]] = [[] for _ in range(network.num_stages)]
    starts = range(0, len(images), batch_size)
    for start in tqdm(
        starts,
        desc=f"exits on {len(images)} images",
        leave=False,
        disable=not show_progress or len(starts) < 10,
    ):
        batch = input_spec.normalise(torch.from_numpy(images.images[start : start + batch_size]))
        for index, output in enumerate(network(batch)):
            logits[index].append(output.logits)
            embeddings[index].append(output.embedding)
    return ExitCache(
        logits=[torch.cat(chunks) for chunks in logits],
        embeddings=[torch.cat(chunks) for chunks in embeddings],
        labels=torch.from_numpy(images.labels),
    )
