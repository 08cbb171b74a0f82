from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distree_mqtt.bundle import BundleError, load_manifest, load_network, load_stage
from distree_mqtt.bundle import loader as loader_module
from tests.conftest import make_bundle


def test_split_equals_unsplit(tiny_bundle: Path, tiny_network) -> None:
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        whole = [o.logits for o in tiny_network(x)]
        features = x
        for index in range(3):
            stage = load_stage(tiny_bundle, index)
            # Features cross the wire as float32 bytes.
            features = torch.from_numpy(
                np.frombuffer(features.numpy().tobytes(), dtype=np.float32).reshape(features.shape).copy()
            )
            features, output = stage(features)
            assert torch.allclose(output.logits, whole[index], atol=1e-5, rtol=0)


def test_round_trip_keeps_every_tensor(tiny_bundle: Path, tiny_network) -> None:
    manifest, loaded = load_network(tiny_bundle)
    for name, tensor in tiny_network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert manifest.compute_content_hash() == manifest.content_hash
    assert [s.input_shape for s in manifest.stages] == [[1, 28, 28], [16, 28, 28], [32, 14, 14]]


def test_exporting_the_same_weights_gives_the_same_bytes(tmp_path: Path, tiny_spec, tiny_network) -> None:
    hashes = {make_bundle(tmp_path / f"b{i}", tiny_spec, tiny_network).content_hash for i in range(8)}
    assert len(hashes) == 1


def test_loading_one_stage_reads_only_its_own_file(tiny_bundle: Path, monkeypatch) -> None:
    opened: list[str] = []
    real_load_file = loader_module.load_file
    real_hash = loader_module.file_sha256

    def spy_load(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_load_file(path, *args, **kwargs)

    def spy_hash(path):
        opened.append(Path(path).name)
        return real_hash(path)

    monkeypatch.setattr(loader_module, "load_file", spy_load)
    monkeypatch.setattr(loader_module, "file_sha256", spy_hash)
    # Other stages' files are not even present on this device.
    (tiny_bundle / "stage-0.safetensors").unlink()
    (tiny_bundle / "stage-2.safetensors").write_bytes(b"garbage")
    stage = load_stage(tiny_bundle, 1)
    assert set(opened) == {"stage-1.safetensors"}
    assert all(p.device.type == "cpu" for p in stage.parameters())


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda b: (b / "stage-1.safetensors").unlink(),
            "stage 1 weights file stage-1.safetensors is missing",
        ),
        (lambda b: (b / "manifest.json").unlink(), "not a bundle"),
        (lambda b: (b / "manifest.json").write_text("{not json"), "invalid JSON"),
        (
            lambda b: _edit_manifest(b, lambda d: d.update(schema_version=99)),
            "schema version 99 is not supported",
        ),
        (
            lambda b: _edit_manifest(b, lambda d: d["stages"][1].update(input_shape=[16, 14, 14])),
            "shapes do not chain",
        ),
        (
            lambda b: _edit_manifest(b, lambda d: d["stages"][0].update(sha256="0" * 64)),
            "content hash mismatch",
        ),
        (lambda b: _edit_manifest(b, lambda d: d.pop("model_id")), "invalid manifest at model_id"),
        (lambda b: _edit_manifest(b, lambda d: d["stages"].pop()), "2 stages listed but the model has 3"),
    ],
)
def test_bad_bundles_fail_with_a_clear_message(tiny_bundle: Path, damage, message) -> None:
    damage(tiny_bundle)
    with pytest.raises(BundleError, match=message):
        load_network(tiny_bundle)


def test_tampered_weights_are_caught_by_the_hash(tiny_bundle: Path) -> None:
    path = tiny_bundle / "stage-2.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    load_stage(tiny_bundle, 0)  # untouched stages still load
    with pytest.raises(BundleError, match=r"stage-2\.safetensors: hash mismatch"):
        load_stage(tiny_bundle, 2)


def test_weights_that_do_not_fit_are_rejected(tiny_bundle: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"unexpected": torch.zeros(3)}, tiny_bundle / "stage-1.safetensors")
    digest = loader_module.file_sha256(tiny_bundle / "stage-1.safetensors")

    def fix_hashes(data):
        from distree_mqtt.bundle.manifest import Manifest

        data["stages"][1]["sha256"] = digest
        data["content_hash"] = Manifest.model_validate(data).compute_content_hash()

    _edit_manifest(tiny_bundle, fix_hashes)
    with pytest.raises(BundleError, match="weights do not fit stage 1"):
        load_stage(tiny_bundle, 1)
    with pytest.raises(BundleError, match="no stage 7"):
        load_stage(tiny_bundle, 7, load_manifest(tiny_bundle))


def test_no_pickle_in_the_bundle(tiny_bundle: Path) -> None:
    for file in tiny_bundle.iterdir():
        assert file.suffix in {".json", ".safetensors"}, file
        assert not file.read_bytes().startswith(b"\x80"), f"{file} looks like a pickle"


def test_schema_version_1_bundles_still_load(tiny_bundle: Path) -> None:
    """Version 1 differs only by lacking operating points; devices fall back to a legacy rule."""

    def downgrade(data: dict) -> None:
        data["schema_version"] = 1
        data["exit_policy"].pop("operating_points")

    _edit_manifest(tiny_bundle, downgrade)
    manifest = load_manifest(tiny_bundle)
    assert manifest.schema_version == 1 and manifest.exit_policy.operating_points == {}
