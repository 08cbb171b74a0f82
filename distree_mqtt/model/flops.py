"""MAC counts per stage body and exit head, measured by torch's own FlopCounterMode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from distree_mqtt.model.multi_exit import MultiExitNetwork, Stage


@dataclass(frozen=True)
class StageCost:
    body_macs: int
    head_macs: int
    parameters: int
    input_shape: tuple[int, ...]  # per sample, without the batch dimension
    output_shape: tuple[int, ...]


def _macs(module: torch.nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        output = module(x)
    # FlopCounterMode counts a multiply-add as two FLOPs.
    return counter.get_total_flops() // 2, output


def stage_costs(network: MultiExitNetwork, input_shape: tuple[int, ...]) -> list[StageCost]:
    was_training = network.training
    network.eval()
    x = torch.zeros(1, *input_shape)
    costs: list[StageCost] = []
    for stage in network.stages:
        assert isinstance(stage, Stage)
        body_macs, features = _macs(stage.body, x)
        head_macs, _ = _macs(stage.head, features)
        costs.append(
            StageCost(
                body_macs=body_macs,
                head_macs=head_macs,
                parameters=sum(p.numel() for p in stage.parameters()),
                input_shape=tuple(x.shape[1:]),
                output_shape=tuple(features.shape[1:]),
            )
        )
        x = features
    network.train(was_training)
    return costs


def exit_macs(costs: list[StageCost]) -> list[int]:
    """MACs spent by a sample that leaves at exit k: every body and head up to and including k."""
    spent, total = [], 0
    for cost in costs:
        total += cost.body_macs + cost.head_macs
        spent.append(total)
    return spent


def no_exit_macs(costs: list[StageCost]) -> int:
    """The plain network without early heads: all bodies and the final classifier only."""
    return sum(cost.body_macs for cost in costs) + costs[-1].head_macs
