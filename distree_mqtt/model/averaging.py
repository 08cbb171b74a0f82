"""Tail averaging: export the mean of the weights after each of a run's last epochs.

Late in a cosine schedule the weights still wander around a minimum; their mean sits nearer its
centre and usually generalises a little better (Izmailov et al., 2018, stochastic weight
averaging). Batch-norm statistics of averaged weights belong to no network that was run, so they
are re-estimated on augmented training batches afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class TailAverage:
    """Running mean of a network's floating-point weights, one snapshot per epoch; its state
    (a sum and a count) goes into the checkpoint, so a resumed run averages the same epochs."""

    def __init__(self) -> None:
        self.total: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, network: nn.Module) -> None:
        for name, tensor in _averaged_entries(network).items():
            snapshot = tensor.detach().float()
            if name in self.total:
                self.total[name] += snapshot
            else:
                self.total[name] = snapshot.clone()
        self.count += 1

    def apply_to(self, network: nn.Module) -> None:
        """Load the mean into `network`; its batch-norm statistics still need re-estimating."""
        if self.count == 0:
            raise ValueError("no epochs were averaged")
        own = _averaged_entries(network)
        if own.keys() != self.total.keys():
            raise ValueError("the averaged weights belong to another network")
        with torch.no_grad():
            for name, tensor in own.items():
                tensor.copy_((self.total[name] / self.count).to(tensor.dtype))

    def state(self) -> dict[str, object]:
        return {"total": self.total, "count": self.count}

    def load_state(self, state: dict[str, object]) -> None:
        total = state["total"]
        count = state["count"]
        if not isinstance(total, dict) or not isinstance(count, int):
            raise ValueError("the checkpoint's weight average is malformed")
        self.total, self.count = total, count


def _averaged_entries(network: nn.Module) -> dict[str, torch.Tensor]:
    # Batch-norm running statistics are re-estimated, not averaged.
    return {
        name: tensor
        for name, tensor in network.state_dict().items()
        if tensor.is_floating_point() and not name.endswith(("running_mean", "running_var"))
    }


@torch.no_grad()
def estimate_batch_norm(
    network: nn.Module, batches: Iterable[torch.Tensor], autocast_bf16: bool = False
) -> None:
    """Recompute every batch-norm layer's statistics as the equally weighted mean over `batches`.
    Pass the training augmentation's batches: the weights were fitted to normalised statistics
    of augmented images (Cutout alone shrinks activation variance), and statistics of clean
    images cost the CIFAR-10 conv-group net a point of accuracy."""
    norms = [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    # A frozen layer (a pretrained backbone's, under freeze_backbone) keeps its statistics: the
    # heads were trained on the features they give.
    layers = [layer for layer in norms if all(p.requires_grad for p in layer.parameters())]
    frozen = [layer for layer in norms if layer not in layers]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: every batch counts equally
    was_training = network.training
    network.train()
    for layer in frozen:
        layer.eval()
    try:
        for batch in batches:
            with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                network(batch)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        network.train(was_training)
