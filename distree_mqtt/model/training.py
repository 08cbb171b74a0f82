"""`distree train`: joint multi-exit training with deterministic seeds and resumable checkpoints."""

from __future__ import annotations

import json
import math
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from tqdm import tqdm

from distree_mqtt.data import DatasetSplits, DataSpec, ImageSet, load_dataset
from distree_mqtt.data.camera_like import camera_like
from distree_mqtt.model.averaging import TailAverage, estimate_batch_norm
from distree_mqtt.model.conv_groups import init_whitening, stem_of
from distree_mqtt.model.input_spec import InputSpec
from distree_mqtt.model.losses import FeatureProjectors, LossWeights, multi_exit_loss, scale_gradient
from distree_mqtt.model.multi_exit import ExitOutput, MultiExitNetwork
from distree_mqtt.model.spec import ModelSpec, build_network

CHECKPOINT_NAME = "checkpoint.pt"
WHITENING_SAMPLE = 5000  # training images the conv_groups stem's patch statistics come from


class OptimisationSpec(BaseModel):
    """How the network is trained."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, title="Passes over the training split", ge=1)
    batch_size: int = Field(128, title="Images per optimiser step", ge=1)
    learning_rate: float = Field(0.1, title="Peak SGD learning rate (after warm-up)", gt=0)
    warmup_epochs: float = Field(1.0, title="Linear warm-up before the cosine decay", ge=0)
    lr_cycles: list[int] | None = Field(
        None,
        title="Cosine cycles (SGDR warm restarts): epochs per cycle, adding up to epochs; default one cycle",
    )
    momentum: float = Field(0.9, title="SGD Nesterov momentum", ge=0, lt=1)
    weight_decay: float = Field(5e-4, title="L2 weight decay", ge=0)
    decay_norm_and_bias: bool = Field(
        True,
        title=(
            "Apply weight decay to batch-norm scales and shifts and to biases too (false: only to "
            "convolution and linear weights, as the fast CIFAR-10 baselines train)"
        ),
    )
    label_smoothing: float = Field(0.0, title="Label smoothing of every exit's loss", ge=0, lt=1)
    exit_weights: list[float] | None = Field(None, title="Loss weight per exit (default all 1)")
    distillation_weight: float = Field(
        0.5, title="Share of an early exit's loss taken by distillation from the final exit", ge=0, le=1
    )
    distillation_temperature: float = Field(3.0, title="Distillation softmax temperature", gt=0)
    feature_transfer_weight: float = Field(
        0.1, title="Weight of pulling early pooled features towards the final stage's", ge=0
    )
    crop_padding: int = Field(4, title="Random-crop padding in pixels (0 disables)", ge=0)
    horizontal_flip: bool = Field(True, title="Random horizontal flips (off for digits)")
    cutout: int = Field(
        0, title="Side of a square set to the mean colour at a random place in each image (0 disables)", ge=0
    )
    exit_gradient_scales: list[float] | None = Field(
        None,
        title=(
            "Per early exit: the share of its loss gradient that reaches the backbone (1 = all, "
            "the default; smaller lets early exits disturb the features later exits need less)"
        ),
    )
    average_last_epochs: int = Field(
        0,
        title=(
            "Export the mean of the weights after each of the last N epochs, with batch-norm "
            "statistics re-estimated on augmented training batches (tail weight averaging; 0 = "
            "the last epoch's weights)"
        ),
        ge=0,
    )
    swa_epochs: int = Field(
        0,
        title=(
            "Stochastic weight averaging after the cosine schedule: this many more epochs at "
            "swa_learning_rate, exporting the mean of the weights after each of them with "
            "batch-norm statistics re-estimated (0 = none; excludes average_last_epochs)"
        ),
        ge=0,
    )
    swa_learning_rate: float = Field(
        0.05, title="Constant learning rate of the weight-averaging epochs (reached after one epoch)", gt=0
    )
    freeze_backbone: bool = Field(False, title="Train only the exit heads")
    pretrained: bool = Field(False, title="Start torchvision backbones from pretrained weights")
    seed: int = Field(0, title="Seed of initialisation, shuffling and augmentation")
    threads: int = Field(2, title="CPU threads for torch", ge=1)
    channels_last: bool = Field(True, title="Use channels-last memory layout (faster CPU convs)")
    autocast_bf16: bool = Field(
        False,
        title=(
            "Run the forward pass in bfloat16 autocast (weights and losses stay float32): about "
            "1.8x faster on CPUs with AVX-512 BF16 or AMX, and on recent GPUs"
        ),
    )

    @property
    def total_epochs(self) -> int:
        """Epochs the run trains: the cosine schedule's and the weight-averaging ones after it."""
        return self.epochs + self.swa_epochs

    @property
    def averaging_window(self) -> int:
        """How many of the run's last epochs the exported weights average (0: none)."""
        return self.swa_epochs or self.average_last_epochs


class TrainConfig(BaseModel):
    """One training run: the model, the data and the optimisation (a TOML file in configs/)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(title="Model id written into the bundle")
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    train: OptimisationSpec = Field(default_factory=OptimisationSpec)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        cycles = self.train.lr_cycles
        if cycles is not None and (min(cycles) < 1 or sum(cycles) != self.train.epochs):
            raise ValueError(
                f"train.lr_cycles must be positive and add up to train.epochs ({self.train.epochs})"
            )
        weights = self.train.exit_weights
        if weights is not None and len(weights) != self.model.num_stages:
            raise ValueError(f"train.exit_weights needs {self.model.num_stages} entries")
        if self.train.swa_epochs and self.train.average_last_epochs:
            raise ValueError("train.swa_epochs and train.average_last_epochs exclude each other")
        if self.train.average_last_epochs > self.train.epochs:
            raise ValueError(f"train.average_last_epochs must not exceed train.epochs ({self.train.epochs})")
        scales = self.train.exit_gradient_scales
        if scales is not None and (len(scales) != self.model.num_stages - 1 or any(s < 0 for s in scales)):
            raise ValueError(
                f"train.exit_gradient_scales needs {self.model.num_stages - 1} entries >= 0 (one per early exit)"
            )
        return self

    def with_train(self, **changes: Any) -> TrainConfig:
        """A copy with some `train` fields changed, checked like a config read from a file."""
        return TrainConfig.model_validate(self.model_dump() | {"train": self.train.model_dump() | changes})

    @classmethod
    def from_toml(cls, path: Path) -> TrainConfig:
        with path.open("rb") as file:
            return cls.model_validate(tomllib.load(file))


@dataclass
class TrainedModel:
    config: TrainConfig
    network: MultiExitNetwork
    input_spec: InputSpec
    data: DatasetSplits
    history: list[dict[str, float]]
    validation: list[float]
    """Validation accuracy per exit of `network` (the averaged weights where averaging is on)."""
    hardware: str
    """What ran the optimisation, e.g. "2 CPU threads" or the GPU's name."""
    averaged_epochs: int = 0


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample random crops (zero padding) and flips, vectorised over the batch."""
    batch, channels, height, width = images.shape
    if padding > 0:
        padded = nn.functional.pad(images, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator)
        rows = offsets[0][:, None] + torch.arange(height)
        cols = offsets[1][:, None] + torch.arange(width)
        images = padded[
            torch.arange(batch)[:, None, None, None],
            torch.arange(channels)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    if flip:
        mask = torch.rand(batch, generator=generator) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(3), images)
    return images


def random_cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout (DeVries and Taylor, 2017): zero a size x size square of each normalised image at a
    random centre (clipped at the borders), vectorised over the batch."""
    batch, _, height, width = images.shape
    centres = torch.stack(
        [
            torch.randint(0, height, (batch,), generator=generator),
            torch.randint(0, width, (batch,), generator=generator),
        ]
    )
    starts = centres - size // 2
    rows = torch.arange(height)[None, :] - starts[0][:, None]
    cols = torch.arange(width)[None, :] - starts[1][:, None]
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return images.masked_fill(inside[:, None], 0.0)


def decay_groups(
    parameters: list[torch.nn.Parameter], weight_decay: float, decay_norm_and_bias: bool
) -> list[dict[str, Any]]:
    """Optimiser parameter groups. Scales, shifts and biases (the one-dimensional parameters) are
    exempt from decay when `decay_norm_and_bias` is off; otherwise there is one group, so the
    optimiser state of runs checkpointed before the option existed still loads."""
    if decay_norm_and_bias:
        return [{"params": parameters, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in parameters if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0},
    ]


def training_forward(
    network: MultiExitNetwork, batch: torch.Tensor, gradient_scales: list[float]
) -> list[ExitOutput]:
    """The network's forward pass with each early head's gradient into the backbone scaled."""
    outputs: list[ExitOutput] = []
    features = batch
    for index in range(network.num_stages):
        stage = network.stage(index)
        features = stage.body(features)
        scale = gradient_scales[index] if index < len(gradient_scales) else 1.0
        outputs.append(stage.head(scale_gradient(features, scale)))
    return outputs


def augmented_batches(
    data: DatasetSplits,
    options: OptimisationSpec,
    input_spec: InputSpec,
    epoch: int,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented, normalised (images, labels) batches on `device`; the
    same epoch index always gives the same batches."""
    generator = torch.Generator().manual_seed(options.seed * 1_000_003 + epoch)
    epoch_set = _epoch_training_set(data, options.seed, epoch)
    order = torch.randperm(len(epoch_set), generator=generator)
    for start in range(0, len(order), options.batch_size):
        batch_index = order[start : start + options.batch_size].numpy()
        images = torch.from_numpy(epoch_set.images[batch_index])
        labels = torch.from_numpy(epoch_set.labels[batch_index])
        images = random_crop_flip(images, options.crop_padding, options.horizontal_flip, generator)
        batch = input_spec.normalise(images)
        if options.cutout > 0:
            batch = random_cutout(batch, options.cutout, generator)
        yield batch.to(device).contiguous(memory_format=memory_format), labels.to(device)


def _epoch_training_set(data: DatasetSplits, seed: int, epoch: int) -> ImageSet:
    if not data.camera_like_train:
        return data.train
    # A fresh camera-like draw every epoch, beside the clean images.
    camera, _ = camera_like(data.train.images[:, 0], seed=seed * 100_003 + epoch)
    return ImageSet(
        np.concatenate([data.train.images, camera[:, None]]),
        np.concatenate([data.train.labels, data.train.labels]),
    )


def learning_rate_factors(options: OptimisationSpec, steps_per_epoch: int) -> list[float]:
    """The learning-rate multiplier of every optimiser step of the run."""
    warmup_steps = max(1, round(options.warmup_epochs * steps_per_epoch))
    factors: list[float] = []
    for index, cycle_epochs in enumerate(options.lr_cycles or [options.epochs]):
        cycle_steps = cycle_epochs * steps_per_epoch
        # Only the first cycle warms up; later cycles restart at the peak (SGDR).
        warmup = warmup_steps if index == 0 else 0
        factors += [_learning_rate_factor(step, cycle_steps, warmup) for step in range(cycle_steps)]
    # Weight averaging climbs linearly from where the cosine ended to its own constant rate over
    # one epoch (a jump would throw the weights far from the minimum they reached).
    swa_factor = options.swa_learning_rate / options.learning_rate
    swa_steps = options.swa_epochs * steps_per_epoch
    factors += [swa_factor * min(1.0, (step + 1) / steps_per_epoch) for step in range(swa_steps)]
    return factors


def _learning_rate_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def exit_accuracies(
    network: MultiExitNetwork,
    images: ImageSet,
    input_spec: InputSpec,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Top-1 accuracy of every exit on a split."""
    network.eval()
    correct = torch.zeros(network.num_stages, device=device)
    for start in range(0, len(images), batch_size):
        batch = input_spec.normalise(torch.from_numpy(images.images[start : start + batch_size]))
        batch = batch.to(device)
        labels = torch.from_numpy(images.labels[start : start + batch_size]).to(device)
        for index, output in enumerate(network(batch)):
            correct[index] += (output.logits.argmax(1) == labels).sum()
    return (correct / len(images)).cpu().tolist()


def train(
    config: TrainConfig,
    output_dir: Path,
    resume: bool = True,
    show_progress: bool = True,
    device: str = "cpu",
) -> TrainedModel:
    """Train (or resume) and return the network in eval mode, on the CPU; checkpoints after
    every epoch. `device` (e.g. "cuda") runs the optimisation there; data loading and
    augmentation stay on the CPU, so a run is reproducible up to the device's arithmetic."""
    options = config.train
    compute = torch.device(device)
    if compute.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    data = load_dataset(config.data)
    if tuple(data.train.images.shape[1:]) != tuple(config.model.input_shape):
        raise ValueError(
            f"data images are {tuple(data.train.images.shape[1:])} but model.input_shape is "
            f"{tuple(config.model.input_shape)}"
        )
    input_spec = InputSpec.from_images(data.train.images, data.class_names)
    network = build_network(config.model, pretrained=options.pretrained)
    if config.model.backbone == "conv_groups":
        # Deterministic from the data, so a resumed run recomputes the same stem it saved.
        sample = input_spec.normalise(torch.from_numpy(data.train.images[:WHITENING_SAMPLE]))
        init_whitening(stem_of(network.stage(0).body), sample)
    projectors = FeatureProjectors(network.embedding_dims)
    if options.freeze_backbone:
        for index in range(network.num_stages):
            network.stage(index).body.requires_grad_(False)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    network = network.to(compute, memory_format=memory_format)  # type: ignore[call-overload]
    projectors = projectors.to(compute)
    parameters = [p for p in [*network.parameters(), *projectors.parameters()] if p.requires_grad]
    optimiser = torch.optim.SGD(
        decay_groups(parameters, options.weight_decay, options.decay_norm_and_bias),
        lr=options.learning_rate,
        momentum=options.momentum,
        nesterov=options.momentum > 0,
    )
    weights = LossWeights(
        exit_weights=options.exit_weights or [1.0] * config.model.num_stages,
        distillation_weight=options.distillation_weight,
        distillation_temperature=options.distillation_temperature,
        feature_transfer_weight=options.feature_transfer_weight,
        label_smoothing=options.label_smoothing,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = output_dir / CHECKPOINT_NAME
    start_epoch = 0
    history: list[dict[str, float]] = []
    average = TailAverage()
    steps_per_epoch = math.ceil(len(_epoch_training_set(data, options.seed, 0)) / options.batch_size)
    factors = learning_rate_factors(options, steps_per_epoch)
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=True, map_location=compute)
        if "average" in state:
            average.load_state(state["average"])
        _check_resumable(
            TrainConfig.model_validate_json(state["config"]),
            config,
            int(state["epoch"]),
            steps_per_epoch,
            average.count,
        )
        network.load_state_dict(state["network"])
        projectors.load_state_dict(state["projectors"])
        optimiser.load_state_dict(state["optimiser"])
        start_epoch = int(state["epoch"])
        history = json.loads(state["history"])

    for epoch in range(start_epoch, options.total_epochs):
        started = time.perf_counter()
        network.train()
        if options.freeze_backbone:
            for index in range(network.num_stages):
                network.stage(index).body.eval()
        running_loss, running_correct, seen = 0.0, 0, 0
        progress = tqdm(
            augmented_batches(data, options, input_spec, epoch, compute, memory_format),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{options.total_epochs}",
            disable=not show_progress,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            leave=False,
        )
        for batch_number, (batch, labels) in enumerate(progress):
            step = epoch * steps_per_epoch + batch_number
            for group in optimiser.param_groups:
                group["lr"] = options.learning_rate * factors[step]
            with torch.autocast(compute.type, dtype=torch.bfloat16, enabled=options.autocast_bf16):
                outputs = training_forward(network, batch, options.exit_gradient_scales or [])
            if options.autocast_bf16:
                outputs = [ExitOutput(o.logits.float(), o.embedding.float()) for o in outputs]
            breakdown = multi_exit_loss(outputs, labels, weights, projectors)
            optimiser.zero_grad(set_to_none=True)
            breakdown.total.backward()
            optimiser.step()
            running_loss += float(breakdown.total.detach()) * len(labels)
            running_correct += int((outputs[-1].logits.argmax(1) == labels).sum())
            seen += len(labels)
            progress.set_postfix(
                loss=f"{running_loss / seen:.3f}", acc=f"{running_correct / seen:.3f}", refresh=False
            )
        progress.close()
        validation = exit_accuracies(network, data.val, input_spec, device=compute)
        record = {
            "epoch": epoch + 1,
            "train_loss": running_loss / seen,
            "train_accuracy_final": running_correct / seen,
            **{f"val_accuracy_exit_{k}": value for k, value in enumerate(validation)},
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        if show_progress:
            print(
                f"epoch {epoch + 1}/{options.total_epochs}: loss {record['train_loss']:.4f}, "
                f"val accuracy per exit {_per_exit(validation)}, {record['seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if epoch >= options.total_epochs - options.averaging_window:
            average.add(network)
        _save_checkpoint(checkpoint_path, config, network, projectors, optimiser, epoch + 1, history, average)
    (output_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    validation = [history[-1][f"val_accuracy_exit_{k}"] for k in range(network.num_stages)]
    if options.averaging_window > 0:
        average.apply_to(network)
        # One more epoch's augmented batches (an epoch index no training step used).
        batches = augmented_batches(data, options, input_spec, options.total_epochs, compute, memory_format)
        estimate_batch_norm(network, (batch for batch, _ in batches), options.autocast_bf16)
        averaged = exit_accuracies(network, data.val, input_spec, device=compute)
        if show_progress:
            print(
                f"mean of the last {average.count} epochs' weights: val accuracy per exit "
                f"{_per_exit(averaged)} (last epoch's: {_per_exit(validation)})",
                file=sys.stderr,
                flush=True,
            )
        validation = averaged
    network = network.to("cpu", memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    return TrainedModel(
        config,
        network,
        input_spec,
        data,
        history,
        validation,
        hardware=_hardware(compute, options.threads),
        averaged_epochs=average.count,
    )


def _hardware(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{threads} CPU threads" if device.type == "cpu" else device.type


def _per_exit(accuracies: list[float]) -> str:
    return " ".join(f"{value:.4f}" for value in accuracies)


def _check_resumable(
    saved: TrainConfig, config: TrainConfig, epochs_done: int, steps_per_epoch: int, averaged: int
) -> None:
    """A checkpoint continues only a run it is part of: the same config, except that the run may
    have been extended (more epochs, more cycles, weight-averaging epochs after the schedule) with
    an identical schedule up to the checkpoint, and the averaging window may change while the
    checkpoint holds exactly the snapshots the new window asks for (averaging never changes the
    trajectory). The name is a label and may change too (a run chosen among seeds is renamed
    before it ships). Fields added to the config since the checkpoint take their defaults."""
    schedule_fields = {"epochs", "lr_cycles", "average_last_epochs", "swa_epochs", "swa_learning_rate"}
    same_otherwise = saved.model_copy(
        update={
            "name": config.name,
            "train": saved.train.model_copy(
                update={name: getattr(config.train, name) for name in schedule_fields}
            ),
        }
    )
    done_steps = epochs_done * steps_per_epoch
    before = learning_rate_factors(saved.train, steps_per_epoch)[:done_steps]
    after = learning_rate_factors(config.train, steps_per_epoch)[:done_steps]
    window_start = config.train.total_epochs - config.train.averaging_window
    if averaged != max(0, epochs_done - window_start):
        raise ValueError(
            f"the checkpoint averaged {averaged} epochs, which does not fit the averaging window of "
            f"the last {config.train.averaging_window}; remove it or use --no-resume"
        )
    if same_otherwise != config or before != after or epochs_done > config.train.total_epochs:
        raise ValueError("the checkpoint was trained with another config; remove it or use --no-resume")


def _save_checkpoint(
    path: Path,
    config: TrainConfig,
    network: nn.Module,
    projectors: nn.Module,
    optimiser: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, float]],
    average: TailAverage,
) -> None:
    state = {
        "config": config.model_dump_json(),
        "network": network.state_dict(),
        "projectors": projectors.state_dict(),
        "optimiser": optimiser.state_dict(),
        "epoch": epoch,
        "history": json.dumps(history),
        "average": average.state(),
    }
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)  # atomic: a crash mid-save never leaves a torn checkpoint
