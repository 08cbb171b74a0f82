from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distree_mqtt.bundle import load_manifest, load_stage
from distree_mqtt.model import ModelSpec, build_network
from distree_mqtt.model.conv_groups import init_whitening, whitening_stem
from distree_mqtt.model.flops import stage_costs
from tests.conftest import make_bundle


def test_conv_group_stages_chain_for_gray_and_rgb() -> None:
    for input_shape in [(3, 32, 32), (1, 28, 28)]:
        spec = ModelSpec(backbone="conv_groups", group_widths=[8, 16, 32], input_shape=input_shape)
        network = build_network(spec).eval()
        shapes = [tuple(f.shape[1:]) for _, f, _ in network.iter_exits(torch.randn(2, *input_shape))]
        side = input_shape[1] - 1  # the 2x2 stem has no padding; every group halves
        assert shapes == [(8, side // 2, side // 2), (16, side // 4, side // 4), (32, side // 8, side // 8)]
        assert [tuple(o.logits.shape) for o in network(torch.randn(2, *input_shape))] == [(2, 10)] * 3


def test_whitening_stem_decorrelates_patches() -> None:
    generator = torch.Generator().manual_seed(0)
    # Strongly correlated channels and neighbouring pixels, as in real images.
    base = torch.randn(64, 1, 17, 17, generator=generator).cumsum(-1).cumsum(-2)
    images = torch.cat([base, 0.5 * base + 0.1 * torch.randn(64, 1, 17, 17, generator=generator)], 1)
    stem = whitening_stem(2)
    init_whitening(stem, images, eps=0.0)
    responses = stem(images)[:, : stem.out_channels // 2].permute(0, 2, 3, 1).reshape(-1, 8).double()
    covariance = responses.T @ responses / len(responses)
    assert torch.allclose(covariance, torch.eye(8, dtype=torch.float64), atol=1e-2)
    assert torch.equal(stem.weight[8:], -stem.weight[:8])
    assert not stem.weight.requires_grad  # fixed by the data, not trained


def test_stage_blocks_cut_conv_groups_and_bad_widths_are_refused() -> None:
    spec = ModelSpec(backbone="conv_groups", group_widths=[8, 16, 16, 32], stage_blocks=[2, 1, 1])
    costs = stage_costs(build_network(spec), spec.input_shape)
    even = ModelSpec(backbone="conv_groups", group_widths=[8, 16, 16, 32], stage_blocks=[1, 2, 1])
    assert costs[0].body_macs > stage_costs(build_network(even), even.input_shape)[0].body_macs
    with pytest.raises(ValueError, match="add up to the 4 blocks"):
        ModelSpec(backbone="conv_groups", group_widths=[8, 16, 16, 32], stage_blocks=[1, 1, 1])
    with pytest.raises(ValueError, match="at least one per stage"):
        ModelSpec(backbone="conv_groups", group_widths=[8, 16])


def test_conv_group_fields_stay_out_of_other_backbones_identity() -> None:
    # Bundles hash this dump; adding the conv_groups fields must not change older bundles' hashes.
    assert "group_widths" not in ModelSpec(depth=10).model_dump()
    spec = ModelSpec(backbone="conv_groups", group_widths=[8, 16, 32])
    assert spec.model_dump()["group_widths"] == [8, 16, 32]
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec


def test_max_pool_exit_heads_are_cheaper_and_chain_like_strided_ones() -> None:
    strided = ModelSpec(backbone="conv_groups", group_widths=[16, 32, 48], head_widths=[32, 16])
    pooled = strided.model_copy(update={"exit_head_downsampling": "max_pool"})
    strided_costs = stage_costs(build_network(strided), strided.input_shape)
    pooled_costs = stage_costs(build_network(pooled), pooled.input_shape)
    # Stage 0 ends at 15x15: the strided head convolves to 8x8, the pooled one at 7x7.
    assert strided_costs[0].head_macs == 8 * 8 * 9 * 16 * 32 + 32 * 10
    assert pooled_costs[0].head_macs == 7 * 7 * 9 * 16 * 32 + 32 * 10
    # Stage 1 ends at 7x7 (<= 8): neither halves it, so the heads are alike.
    assert pooled_costs[1].head_macs == strided_costs[1].head_macs
    assert [c.body_macs for c in pooled_costs] == [c.body_macs for c in strided_costs]
    network = build_network(pooled).eval()
    assert [tuple(o.logits.shape) for o in network(torch.randn(2, 3, 32, 32))] == [(2, 10)] * 3
    # The default stays out of the dump (older bundles keep their hashes); the choice round-trips.
    assert "exit_head_downsampling" not in strided.model_dump()
    assert ModelSpec.model_validate_json(pooled.model_dump_json()) == pooled
    with pytest.raises(ValueError, match="exit_head_downsampling"):
        ModelSpec(exit_head_downsampling="average")


def test_max_pooled_scaled_final_head_round_trips_through_a_bundle(tmp_path: Path) -> None:
    spec = ModelSpec(
        backbone="conv_groups", group_widths=[8, 16, 32], head_widths=[16, 16], input_shape=(1, 28, 28)
    )
    headed = spec.model_copy(update={"final_head_pooling": "max", "final_logit_scale": 0.125})
    torch.manual_seed(0)
    network = build_network(headed).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        final_map = list(network.iter_exits(x))[-1][1]
        outputs = network(x)
        head = network.stage(2).head
        assert torch.equal(outputs[-1].embedding, final_map.amax(dim=(2, 3)))
        assert torch.allclose(outputs[-1].logits, 0.125 * head.classifier(outputs[-1].embedding), atol=1e-6)
    # Only the final head changes; early heads keep average pooling and unscaled logits.
    assert isinstance(network.stage(0).head.features[-2], torch.nn.AdaptiveAvgPool2d)
    assert network.stage(0).head.logit_scale == 1.0
    # The defaults stay out of the dump (older bundles keep their hashes); the choice survives
    # a bundle round trip, and the bundle run stage by stage gives the unsplit logits.
    assert not {"final_head_pooling", "final_logit_scale"} & spec.model_dump().keys()
    make_bundle(tmp_path / "bundle", headed, network)
    assert load_manifest(tmp_path / "bundle").model == headed
    features = x
    with torch.no_grad():
        for index in range(3):
            features, output = load_stage(tmp_path / "bundle", index)(features)
            assert torch.allclose(output.logits, outputs[index].logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="final_logit_scale"):
        ModelSpec(final_logit_scale=0)
