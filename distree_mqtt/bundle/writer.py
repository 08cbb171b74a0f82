"""Write a bundle from a trained network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from distree_mqtt.bundle.loader import MANIFEST_NAME, file_sha256, load_manifest
from distree_mqtt.bundle.manifest import (
    SCHEMA_VERSION,
    CalibrationEntry,
    ExitPolicyProfile,
    Manifest,
    StageEntry,
    content_hash,
)
from distree_mqtt.model.flops import no_exit_macs, stage_costs
from distree_mqtt.model.input_spec import InputSpec
from distree_mqtt.model.multi_exit import MultiExitNetwork
from distree_mqtt.model.spec import ModelSpec


def write_bundle(
    bundle_dir: Path,
    model_id: str,
    model: ModelSpec,
    input_spec: InputSpec,
    network: MultiExitNetwork,
    calibration: list[CalibrationEntry],
    exit_policy: ExitPolicyProfile,
    training: dict[str, float | int | str] | None = None,
) -> Manifest:
    """Write weights and manifest to a fresh directory (replaced atomically where possible)."""
    bundle_dir = Path(bundle_dir)
    staging = bundle_dir.with_name(bundle_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    costs = stage_costs(network, tuple(input_spec.shape))
    entries: list[StageEntry] = []
    for index, (stage, cost) in enumerate(zip(network.stages, costs, strict=True)):
        weights_file = f"stage-{index}.safetensors"
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in stage.state_dict().items()}
        # One metadata key: safetensors writes the metadata map in a random order, and the file's
        # hash must be the same every time the same weights are exported.
        label = json.dumps({"model_id": model_id, "stage_index": index}, sort_keys=True)
        save_file(tensors, staging / weights_file, metadata={"distree_stage": label})
        entries.append(
            StageEntry(
                index=index,
                weights_file=weights_file,
                sha256=file_sha256(staging / weights_file),
                input_shape=list(cost.input_shape),
                output_shape=list(cost.output_shape),
                body_macs=cost.body_macs,
                head_macs=cost.head_macs,
                parameters=cost.parameters,
                temperature=calibration[index].temperature,
            )
        )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model_id=model_id,
        content_hash=content_hash(model, input_spec, [entry.sha256 for entry in entries]),
        model=model,
        input=input_spec,
        stages=entries,
        no_exit_macs=no_exit_macs(costs),
        calibration=calibration,
        exit_policy=exit_policy,
        training=training or {},
    )
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n")
    load_manifest(staging)  # never publish a bundle we cannot read back
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    staging.rename(bundle_dir)
    return manifest
