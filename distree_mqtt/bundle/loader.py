"""Load and verify bundles; a device loads only its own stage and reads only its own file."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from pydantic import ValidationError
from safetensors.torch import load_file

from distree_mqtt.bundle.manifest import READABLE_SCHEMA_VERSIONS, Manifest
from distree_mqtt.model.multi_exit import MultiExitNetwork, Stage
from distree_mqtt.model.spec import build_stage

MANIFEST_NAME = "manifest.json"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the bundle and the problem."""


def load_manifest(bundle_dir: Path) -> Manifest:
    """Read and check manifest.json: schema version, stage chaining and content hash."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: not a bundle ({MANIFEST_NAME} missing)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path}: invalid JSON ({error})") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version not in READABLE_SCHEMA_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
        raise BundleError(
            f"{path}: schema version {version!r} is not supported (this release reads {readable})"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BundleError(f"{path}: invalid manifest at {where}: {first['msg']}") from None
    _check_structure(manifest, path)
    return manifest


def _check_structure(manifest: Manifest, path: Path) -> None:
    stages = manifest.stages
    if len(stages) != manifest.model.num_stages:
        raise BundleError(
            f"{path}: {len(stages)} stages listed but the model has {manifest.model.num_stages}"
        )
    if [stage.index for stage in stages] != list(range(len(stages))):
        raise BundleError(f"{path}: stage indices must be 0..{len(stages) - 1} in order")
    if list(stages[0].input_shape) != list(manifest.input.shape):
        raise BundleError(
            f"{path}: stage 0 takes {stages[0].input_shape} but the input spec is {list(manifest.input.shape)}"
        )
    for before, after in itertools.pairwise(stages):
        if before.output_shape != after.input_shape or before.output_dtype != after.input_dtype:
            raise BundleError(
                f"{path}: shapes do not chain: stage {before.index} outputs {before.output_shape} "
                f"{before.output_dtype}, stage {after.index} expects {after.input_shape} {after.input_dtype}"
            )
    if len(manifest.calibration) != len(stages):
        raise BundleError(
            f"{path}: calibration has {len(manifest.calibration)} entries for {len(stages)} exits"
        )
    if manifest.compute_content_hash() != manifest.content_hash:
        raise BundleError(f"{path}: content hash mismatch (manifest edited or stage hashes changed)")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_stage(bundle_dir: Path, stage_index: int, manifest: Manifest | None = None) -> Stage:
    """Build stage `stage_index` and load its weights after verifying the file's hash."""
    bundle_dir = Path(bundle_dir)
    manifest = manifest or load_manifest(bundle_dir)
    if not 0 <= stage_index < len(manifest.stages):
        raise BundleError(f"{bundle_dir}: no stage {stage_index} (the bundle has {len(manifest.stages)})")
    entry = manifest.stages[stage_index]
    weights_path = bundle_dir / entry.weights_file
    if Path(entry.weights_file).name != entry.weights_file:
        raise BundleError(f"{bundle_dir}: stage {stage_index} weights file must be a plain file name")
    if not weights_path.is_file():
        raise BundleError(f"{bundle_dir}: stage {stage_index} weights file {entry.weights_file} is missing")
    if file_sha256(weights_path) != entry.sha256:
        raise BundleError(f"{weights_path}: hash mismatch (corrupted or replaced weights)")
    stage = build_stage(manifest.model, stage_index)
    try:
        tensors = load_file(weights_path)
        stage.load_state_dict(tensors, strict=True, assign=True)
    except (RuntimeError, OSError, ValueError) as error:
        summary = str(error).splitlines()[0]
        raise BundleError(f"{weights_path}: weights do not fit stage {stage_index}: {summary}") from None
    return stage.eval()


def load_network(bundle_dir: Path) -> tuple[Manifest, MultiExitNetwork]:
    manifest = load_manifest(bundle_dir)
    stages = [load_stage(bundle_dir, index, manifest) for index in range(len(manifest.stages))]
    network = MultiExitNetwork(stages).eval()
    return manifest, network
