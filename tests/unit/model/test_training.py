from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distree_mqtt.model.averaging import _averaged_entries
from distree_mqtt.model.conv_groups import stem_of
from distree_mqtt.model.losses import scale_gradient
from distree_mqtt.model.spec import ModelSpec, build_network
from distree_mqtt.model.training import (
    TrainConfig,
    decay_groups,
    exit_accuracies,
    learning_rate_factors,
    random_crop_flip,
    random_cutout,
    train,
    training_forward,
)


def _config(model_overrides: dict | None = None, **train_overrides) -> TrainConfig:
    model = {"depth": 10, "widen_factor": 1, "input_shape": [1, 28, 28], "head_widths": [8, 16]}
    return TrainConfig.model_validate(
        {
            "name": "tiny",
            "model": model | (model_overrides or {}),
            "data": {"name": "mnist", "train_limit": 2000},
            "train": {
                "epochs": 3,
                "batch_size": 64,
                "learning_rate": 0.05,
                "crop_padding": 1,
                "horizontal_flip": False,
                "threads": 1,
            }
            | train_overrides,
        }
    )


def test_a_tiny_run_really_learns(tmp_path: Path) -> None:
    trained = train(_config(), tmp_path, show_progress=False)
    losses = [record["train_loss"] for record in trained.history]
    assert losses[-1] < 0.8 * losses[0]
    accuracies = exit_accuracies(trained.network, trained.data.test, trained.input_spec)
    assert min(accuracies) > 0.3  # chance is 0.1
    assert accuracies[-1] > 0.6
    assert (tmp_path / "checkpoint.pt").exists()
    assert (tmp_path / "history.json").exists()
    assert trained.hardware == "1 CPU threads"  # recorded in the bundle's training entry


def test_resuming_gives_the_same_weights_as_one_uninterrupted_run(tmp_path: Path) -> None:
    straight = train(_config(epochs=2), tmp_path / "straight", show_progress=False)
    interrupted = tmp_path / "interrupted"
    train(_config(epochs=1), interrupted, show_progress=False)
    # Same model/data/optimiser; only the epoch budget grows, as after an interruption.
    config = _config(epochs=2)
    state = torch.load(interrupted / "checkpoint.pt", weights_only=True)
    state["config"] = config.model_dump_json()
    torch.save(state, interrupted / "checkpoint.pt")
    resumed = train(config, interrupted, show_progress=False)
    assert len(resumed.history) == 2
    for name, tensor in straight.network.state_dict().items():
        assert torch.allclose(resumed.network.state_dict()[name].float(), tensor.float(), atol=1e-6), name


def test_a_checkpoint_from_another_config_is_refused_but_a_renamed_one_resumes(tmp_path: Path) -> None:
    first = train(_config(epochs=1), tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="trained with another config"):
        train(_config(epochs=1, learning_rate=0.2), tmp_path, show_progress=False)
    renamed = train(
        _config(epochs=1).model_copy(update={"name": "tiny-final"}), tmp_path, show_progress=False
    )
    assert renamed.config.name == "tiny-final"
    assert renamed.history == first.history  # nothing retrained: the checkpoint was complete
    for name, tensor in first.network.state_dict().items():
        assert torch.equal(renamed.network.state_dict()[name], tensor), name


def test_freeze_backbone_trains_only_the_heads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = train(_config(epochs=1, freeze_backbone=True), tmp_path, show_progress=False)
    from distree_mqtt.model import build_network

    torch.manual_seed(0)
    initial = build_network(trained.config.model)
    for index in range(3):
        before = initial.stage(index).body.state_dict()
        after = trained.network.stage(index).body.state_dict()
        for name, tensor in before.items():
            assert torch.equal(after[name], tensor), f"stage {index} {name} changed"
        assert not torch.equal(
            initial.stage(index).head.state_dict()["classifier.weight"],
            trained.network.stage(index).head.state_dict()["classifier.weight"],
        )


def test_random_crop_keeps_shape_and_content() -> None:
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    cropped = random_crop_flip(images, 2, True, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape
    assert random_crop_flip(images, 0, False, torch.Generator()).equal(images)


def test_cutout_blanks_one_square_per_image_clipped_at_the_border() -> None:
    images = torch.ones(200, 3, 10, 10)
    blanked = random_cutout(images, 4, torch.Generator().manual_seed(0))
    zeros = (blanked == 0).all(dim=1)  # every channel of a pixel, or none
    assert torch.equal(zeros, (blanked == 0).any(dim=1))
    counts = zeros.sum(dim=(1, 2))
    assert counts.max() == 16 and counts.min() >= 4  # a full square, or a corner of one
    for mask in zeros[:20]:
        rows, cols = mask.nonzero(as_tuple=True)
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
    assert random_cutout(images, 0, torch.Generator()).equal(images)


def test_a_run_can_be_extended_by_a_warm_restart_but_not_by_rewriting_its_schedule(tmp_path: Path) -> None:
    train(_config(epochs=1, warmup_epochs=0.5), tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="another config"):
        # A longer single cosine would have used other learning rates in epoch 1.
        train(_config(epochs=2, warmup_epochs=0.5), tmp_path, show_progress=False)
    extended = train(_config(epochs=2, lr_cycles=[1, 1], warmup_epochs=0.5), tmp_path, show_progress=False)
    assert [record["epoch"] for record in extended.history] == [1, 2]
    with pytest.raises(ValueError, match="add up to"):
        _config(epochs=3, lr_cycles=[1, 1])


def test_conv_groups_train_in_bfloat16_autocast_and_whiten_their_stem(tmp_path: Path) -> None:
    conv_groups = {"backbone": "conv_groups", "group_widths": [8, 16, 16]}
    config = _config(conv_groups, epochs=2, autocast_bf16=True, learning_rate=0.1)
    trained = train(config, tmp_path, show_progress=False)
    stem = stem_of(trained.network.stage(0).body)
    assert stem.weight.abs().sum() > 0 and torch.equal(stem.weight[4:], -stem.weight[:4])
    assert all(p.dtype == torch.float32 for p in trained.network.parameters())  # bf16 only in compute
    accuracies = exit_accuracies(trained.network, trained.data.test, trained.input_spec)
    assert accuracies[-1] > 0.5  # chance is 0.1


TRAIN_CONFIGS = sorted((Path(__file__).parents[3] / "configs" / "train").glob("*.toml"))


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_training_config_is_valid(path: Path) -> None:
    assert len(TRAIN_CONFIGS) >= 3  # mnist, cifar10 and the conv-group alternative
    config = TrainConfig.from_toml(path)
    assert config.name and config.train.epochs >= 1


def test_norm_and_bias_parameters_can_be_exempt_from_weight_decay() -> None:
    network = build_network(
        ModelSpec.model_validate({"backbone": "conv_groups", "group_widths": [8, 16, 16]})
    )
    parameters = [p for p in network.parameters() if p.requires_grad]
    assert [len(g["params"]) for g in decay_groups(parameters, 0.1, True)] == [len(parameters)]

    before = [p.detach().clone() for p in parameters]
    optimiser = torch.optim.SGD(decay_groups(parameters, 0.1, False), lr=1.0)
    for p in parameters:
        p.grad = torch.zeros_like(p)  # only the decay moves a parameter
    optimiser.step()
    for old, new in zip(before, parameters, strict=True):
        if new.ndim > 1:  # convolution and linear weights shrink by lr * decay
            assert torch.allclose(new, old * 0.9)
        else:  # batch-norm scales and shifts, biases: untouched
            assert torch.equal(new, old)
    assert any(p.ndim <= 1 for p in parameters) and any(p.ndim > 1 for p in parameters)


def test_scale_gradient_is_the_identity_forward_and_scales_the_gradient_back() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * 2).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 0.5))


def test_exit_gradient_scales_keep_early_exits_off_the_backbone_but_train_their_heads() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(depth=10, widen_factor=1, input_shape=(1, 12, 12), head_widths=[4, 4])
    network = build_network(spec)
    batch = torch.randn(6, 1, 12, 12)

    def grads(scales: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        network.zero_grad()
        outputs = training_forward(network, batch, scales)
        outputs[0].logits.sum().backward()  # only exit 0's loss
        stem = next(network.stage(0).body.parameters())
        head = next(network.stage(0).head.parameters())
        return stem.grad.clone(), head.grad.clone()

    full_body, full_head = grads([1.0, 1.0])
    quarter_body, quarter_head = grads([0.25, 1.0])
    none_body, none_head = grads([0.0, 1.0])
    assert full_body.abs().sum() > 0
    assert torch.allclose(quarter_body, 0.25 * full_body, atol=1e-6)
    assert torch.count_nonzero(none_body) == 0
    assert torch.allclose(full_head, quarter_head) and torch.allclose(full_head, none_head)
    # The forward pass is the network's own.
    network.eval()
    for mine, theirs in zip(training_forward(network, batch, [0.0, 0.0]), network(batch), strict=True):
        assert torch.equal(mine.logits, theirs.logits)


def test_exit_gradient_scales_need_one_entry_per_early_exit() -> None:
    with pytest.raises(ValueError, match="exit_gradient_scales needs 2 entries"):
        _config(exit_gradient_scales=[0.5])
    with pytest.raises(ValueError, match="exit_gradient_scales"):
        _config(exit_gradient_scales=[0.5, -1.0])
    single = _config({"num_stages": 1, "head_widths": []}, exit_gradient_scales=[])
    assert single.train.exit_gradient_scales == []  # no early exit, nothing to scale


def test_tail_averaging_exports_the_mean_of_the_last_epochs_without_changing_the_run(tmp_path: Path) -> None:
    plain = train(_config(), tmp_path / "plain", show_progress=False)
    averaged = train(_config(average_last_epochs=2), tmp_path / "averaged", show_progress=False)
    state = torch.load(tmp_path / "averaged" / "checkpoint.pt", weights_only=True)
    assert state["average"]["count"] == 2 and averaged.averaged_epochs == 2
    # The checkpoint keeps the trajectory: the last epoch's weights, as in the plain run.
    for name, tensor in plain.network.state_dict().items():
        assert torch.allclose(state["network"][name].float(), tensor.float(), atol=1e-6), name
    moved = 0
    for name, tensor in _averaged_entries(averaged.network).items():
        assert torch.allclose(tensor, state["average"]["total"][name] / 2, atol=1e-6), name
        moved += int(not torch.allclose(tensor, state["network"][name], atol=1e-6))
    assert moved > 0  # epoch 2 and epoch 3 differ, so the mean is neither
    # Batch-norm statistics were re-estimated for the averaged weights, and the reported
    # validation accuracy is the exported network's.
    assert averaged.validation == exit_accuracies(averaged.network, averaged.data.val, averaged.input_spec)
    assert averaged.validation[-1] > 0.6
    assert plain.averaged_epochs == 0 and plain.validation == [
        plain.history[-1][f"val_accuracy_exit_{k}"] for k in range(3)
    ]


def test_an_averaging_window_may_be_set_on_resume_only_before_it_starts(tmp_path: Path) -> None:
    train(_config(epochs=1, lr_cycles=[1]), tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="averaged 0 epochs"):
        # Epoch 1 would have been in a 3-epoch window; its snapshot was never taken.
        train(_config(epochs=3, lr_cycles=[1, 2], average_last_epochs=3), tmp_path, show_progress=False)
    extended = train(
        _config(epochs=3, lr_cycles=[1, 2], average_last_epochs=2), tmp_path, show_progress=False
    )
    assert extended.averaged_epochs == 2
    with pytest.raises(ValueError, match="must not exceed"):
        _config(epochs=2, average_last_epochs=3)


def test_weight_averaging_epochs_continue_a_finished_run_at_their_own_rate(tmp_path: Path) -> None:
    finished = train(_config(epochs=2), tmp_path, show_progress=False)
    config = _config(epochs=2, swa_epochs=2, swa_learning_rate=0.02)
    averaged = train(config, tmp_path, show_progress=False)  # resumes after the cosine's epoch 2
    assert [record["epoch"] for record in averaged.history] == [1, 2, 3, 4]
    assert averaged.history[:2] == finished.history
    assert averaged.averaged_epochs == 2
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 4 and state["average"]["count"] == 2
    for name, tensor in _averaged_entries(averaged.network).items():
        assert torch.allclose(tensor, state["average"]["total"][name] / 2, atol=1e-6), name
    assert averaged.validation == exit_accuracies(averaged.network, averaged.data.val, averaged.input_spec)
    # The schedule: the cosine ends near zero, one epoch climbs linearly to the averaging rate,
    # which then holds.
    steps = 32  # any number of steps per epoch
    factors = learning_rate_factors(config.train, steps)
    assert len(factors) == 4 * steps
    assert factors[: 2 * steps] == learning_rate_factors(_config(epochs=2).train, steps)
    assert factors[2 * steps] == pytest.approx(0.4 / steps)
    assert factors[3 * steps - 1 :] == [pytest.approx(0.4)] * (steps + 1)
    with pytest.raises(ValueError, match="exclude each other"):
        _config(swa_epochs=2, average_last_epochs=2)


def test_batch_norm_estimate_is_the_mean_over_the_batches_given() -> None:
    from distree_mqtt.model.averaging import TailAverage, estimate_batch_norm

    batches = [
        torch.randn(10, 1, 4, 4, generator=torch.Generator().manual_seed(k)) * (k + 1) for k in range(4)
    ]
    layer = torch.nn.BatchNorm2d(1)
    network = torch.nn.Sequential(layer).eval()
    estimate_batch_norm(network, batches)
    flat = torch.stack([batch.flatten() for batch in batches])
    assert torch.allclose(layer.running_mean, flat.mean(1).mean(0, keepdim=True), atol=1e-6)
    assert torch.allclose(layer.running_var, flat.var(1).mean(0, keepdim=True), atol=1e-5)
    assert not network.training and layer.momentum == 0.1  # left as it was found
    # A frozen layer (freeze_backbone) keeps its statistics and normalises with them meanwhile.
    frozen, trained = torch.nn.BatchNorm2d(1), torch.nn.BatchNorm2d(1)
    frozen.requires_grad_(False)
    frozen.running_mean.fill_(3.0)
    estimate_batch_norm(torch.nn.Sequential(frozen, trained), batches)
    assert frozen.running_mean.item() == 3.0 and frozen.num_batches_tracked == 0
    expected = torch.stack([(batch.flatten() - 3.0) / (1 + frozen.eps) ** 0.5 for batch in batches])
    assert torch.allclose(trained.running_mean, expected.mean(1).mean(0, keepdim=True), atol=1e-5)
    with pytest.raises(ValueError, match="no epochs"):
        TailAverage().apply_to(network)
    average = TailAverage()
    average.add(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="another network"):
        average.apply_to(network)


def test_augmented_batches_are_the_same_for_the_same_epoch_and_differ_between_epochs() -> None:
    from distree_mqtt.data import load_dataset
    from distree_mqtt.model.input_spec import InputSpec
    from distree_mqtt.model.training import augmented_batches

    config = _config(cutout=6, batch_size=500)
    data = load_dataset(config.data)
    spec = InputSpec.from_images(data.train.images, data.class_names)

    def epoch(index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(augmented_batches(data, config.train, spec, index, torch.device("cpu")))

    first, again, second = epoch(0), epoch(0), epoch(1)
    sizes = [len(labels) for _, labels in first]
    assert set(sizes[:-1]) == {500} and 0 < sizes[-1] <= 500
    # Every training image once per epoch (MNIST adds one camera-like copy of each).
    copies, remainder = divmod(sum(sizes), len(data.train))
    assert remainder == 0 and copies in (1, 2)
    labels = sorted(torch.cat([labels for _, labels in first]).tolist())
    assert labels == sorted(data.train.labels.tolist() * copies)
    assert all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(first, again, strict=True))
    assert not torch.equal(first[0][0], second[0][0])
