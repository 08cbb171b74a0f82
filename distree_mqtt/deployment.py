"""What a set of settings files would run, and whether they make a working deployment.

`distree config check` reads one file per service (the file a systemd instance is started
with) and, given several, checks them together: every stage of every pipeline has a device,
all of a pipeline's services agree on the bundle and the broker, replicas of a stage share one
subscription group, ids are unique.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from distree_mqtt.bundle.loader import load_manifest
from distree_mqtt.bundle.manifest import Manifest, StageEntry
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import DistreeSettings
from distree_mqtt.topics import Topics


@dataclass(frozen=True)
class ServiceConfig:
    path: Path
    settings: DistreeSettings

    @property
    def role(self) -> str:
        return self.settings.role or "unspecified"

    @property
    def pipeline_key(self) -> tuple[str, str, str]:
        endpoint = self.settings.broker.endpoint()
        return (f"{endpoint.host}:{endpoint.port}", self.settings.topic_prefix, self.settings.pipeline)


@dataclass
class DeploymentReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def bundle_dir(settings: DistreeSettings, role: str) -> Path:
    chosen = {"orchestrator": settings.orchestrator.bundle, "camera": settings.camera.bundle}.get(
        role, settings.device.bundle
    )
    return chosen or reference_bundle("mnist")


def describe(config: ServiceConfig) -> list[str]:
    """Human-readable lines: the command the file runs, and what it talks to."""
    settings = config.settings
    topics = Topics(settings.topic_prefix, settings.pipeline)
    endpoint = settings.broker.endpoint()
    tls = f", TLS (CA {settings.broker.ca_file or 'system'})" if endpoint.tls else ""
    lines = [f"broker: {settings.broker.redacted_url} (MQTT {settings.broker.protocol}{tls})"]
    if config.role == "device":
        options = settings.device
        manifest = load_manifest(bundle_dir(settings, "device"))
        stage = _stage(manifest, options.stage_index, config.path)
        last = options.stage_index == len(manifest.stages) - 1
        subscribe = (
            topics.stage_input_shared(options.stage_index, options.group)
            if options.shared_subscription
            else topics.stage_input(options.stage_index)
        )
        lines[:0] = [
            f"runs: distree device, stage {options.stage_index} of {len(manifest.stages)} of "
            f"{manifest.model_id} ({manifest.content_hash[:12]}), "
            f"{(stage.body_macs + stage.head_macs) / 1e6:.1f} M MACs per request",
            f"device id: {options.device_id or '<host>-stage<k>-<pid> (set one for stable entities)'}",
        ]
        lines += [
            f"subscribes: {subscribe}",
            (
                f"answers: {topics.root}/results/<source> (final exit)"
                if last
                else f"forwards to: {topics.stage_input(options.stage_index + 1)} ({options.codec}); "
                f"early exits answer on {topics.root}/results/<source>"
            ),
            f"queue {options.queue_capacity}, batches up to {options.max_batch}, {options.threads} thread(s)",
        ]
    elif config.role == "orchestrator":
        options_o = settings.orchestrator
        manifest = load_manifest(bundle_dir(settings, "orchestrator"))
        lines[:0] = [
            f"runs: distree orchestrator, mode {options_o.mode}, p95 target {options_o.latency_target_ms:g} ms, "
            f"profile of {manifest.model_id} ({manifest.content_hash[:12]})",
        ]
        lines.append(f"publishes: {topics.policy} (retained)")
    elif config.role == "camera":
        camera = settings.camera
        manifest = load_manifest(bundle_dir(settings, "camera"))
        classes = camera.classes or manifest.input.class_names
        gate = "no motion gate" if camera.motion_method == "none" else f"motion gate {camera.motion_method}"
        lines[:0] = [
            f"runs: distree camera {camera.camera_id!r}: {camera.source} at <= {camera.fps:g} fps, {gate}, "
            f"inputs for {manifest.model_id} ({manifest.content_hash[:12]})",
            f"detects: {', '.join(classes)} at confidence >= {camera.min_confidence:g}",
        ]
        lines.append(
            f"publishes requests to: {topics.stage_input(0)}, state to {topics.camera(camera.camera_id)}/#"
        )
    else:
        lines[:0] = ["runs: nothing by itself (no `role`); usable by distree infer/results"]
    lines.append(f"pipeline: {topics.root}")
    return lines


def check_deployment(configs: list[ServiceConfig]) -> DeploymentReport:
    """Cross-file checks; each problem names the files involved."""
    report = DeploymentReport()
    by_pipeline: dict[tuple[str, str, str], list[ServiceConfig]] = defaultdict(list)
    for config in configs:
        if config.settings.role is None:
            report.warnings.append(f"{config.path}: no `role`; the daemons will accept it for any command")
        by_pipeline[config.pipeline_key].append(config)
    _check_unique_ids(configs, report)
    for (broker, prefix, pipeline), members in sorted(by_pipeline.items()):
        _check_pipeline(f"{prefix}/{pipeline} on {broker}", members, report)
    return report


def _check_unique_ids(configs: list[ServiceConfig], report: DeploymentReport) -> None:
    seen: dict[tuple[tuple[str, str, str], str], Path] = {}
    for config in configs:
        if config.role == "camera":
            # A camera's status and telemetry share the devices' topics: ids must not collide.
            key = (config.pipeline_key, config.settings.camera.camera_id)
            if key in seen:
                report.errors.append(f"{config.path}: camera_id {key[1]!r} already used by {seen[key]}")
            seen[key] = config.path
            continue
        if config.role != "device":
            continue
        device_id = config.settings.device.device_id
        if device_id is None:
            report.warnings.append(f"{config.path}: no device_id; entities and telemetry change on restart")
            continue
        key = (config.pipeline_key, device_id)
        if key in seen:
            report.errors.append(f"{config.path}: device_id {device_id!r} already used by {seen[key]}")
        seen[key] = config.path


def _check_pipeline(name: str, members: list[ServiceConfig], report: DeploymentReport) -> None:
    devices = [config for config in members if config.role == "device"]
    orchestrators = [config for config in members if config.role == "orchestrator"]
    cameras = [config for config in members if config.role == "camera"]
    if not devices:
        if orchestrators or cameras:
            report.errors.append(f"{name}: no device runs any stage")
        return
    manifests: dict[str, tuple[Manifest, Path]] = {}
    for config in devices + orchestrators + cameras:
        manifest = load_manifest(bundle_dir(config.settings, config.role))
        manifests.setdefault(manifest.content_hash, (manifest, config.path))
    if len(manifests) > 1:
        listing = ", ".join(f"{m.model_id} ({h[:12]}) in {p}" for h, (m, p) in manifests.items())
        report.errors.append(f"{name}: services disagree on the bundle: {listing}")
        return
    manifest = next(iter(manifests.values()))[0]
    replicas: dict[int, list[ServiceConfig]] = defaultdict(list)
    for config in devices:
        if config.settings.device.whole_model:
            report.warnings.append(f"{config.path}: whole_model baseline device")
            continue
        if config.settings.device.stage_index >= len(manifest.stages):
            report.errors.append(
                f"{config.path}: stage {config.settings.device.stage_index} does not exist "
                f"({manifest.model_id} has {len(manifest.stages)} stages)"
            )
            continue
        replicas[config.settings.device.stage_index].append(config)
    missing = [index for index in range(len(manifest.stages)) if index not in replicas]
    if missing:
        report.errors.append(f"{name}: no device runs stage(s) {', '.join(map(str, missing))}")
    for index, group in sorted(replicas.items()):
        if len(group) > 1:
            groups = {config.settings.device.group for config in group}
            if len(groups) > 1 or not all(config.settings.device.shared_subscription for config in group):
                paths = ", ".join(str(config.path) for config in group)
                report.errors.append(
                    f"{name}: replicas of stage {index} must share one subscription group with "
                    f"shared_subscription on, or each runs every request ({paths})"
                )
    for config in cameras:
        unknown = sorted(set(config.settings.camera.classes or []) - set(manifest.input.class_names))
        if unknown:
            report.errors.append(
                f"{config.path}: classes {', '.join(unknown)} are not among {manifest.model_id}'s "
                f"({', '.join(manifest.input.class_names)})"
            )
    if not orchestrators:
        report.warnings.append(f"{name}: no orchestrator; devices use the bundle's default policy")
    elif len(orchestrators) > 1:
        paths = ", ".join(str(config.path) for config in orchestrators)
        report.errors.append(
            f"{name}: {len(orchestrators)} orchestrators would fight over the policy ({paths})"
        )
    stage_counts = ", ".join(f"stage {index} x{len(group)}" for index, group in sorted(replicas.items()))
    report.summary.append(
        f"{name}: {manifest.model_id}, {stage_counts}; {len(orchestrators)} orchestrator(s), "
        f"{len(cameras)} camera(s)"
    )


def _stage(manifest: Manifest, index: int, path: Path) -> StageEntry:
    if index >= len(manifest.stages):
        raise ValueError(
            f"{path}: stage {index} does not exist ({manifest.model_id} has {len(manifest.stages)})"
        )
    return manifest.stages[index]
