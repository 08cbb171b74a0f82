"""The example deployments validate, and the cross-file checks catch broken ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distree_mqtt.bundle.loader import load_manifest
from distree_mqtt.deployment import ServiceConfig, check_deployment
from distree_mqtt.settings import load_settings

DEPLOYMENTS = Path(__file__).parents[3] / "configs" / "deployments"


def _load(directory: Path) -> list[ServiceConfig]:
    return [ServiceConfig(path, load_settings(path)) for path in sorted(directory.rglob("*.yaml"))]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distree_mqtt.cli.main", "config", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", ["home", "factory"])
def test_example_deployment_is_complete_and_consistent(name: str) -> None:
    configs = _load(DEPLOYMENTS / name)
    report = check_deployment(configs)
    assert report.errors == []
    assert report.warnings == []
    assert all(config.settings.role for config in configs)
    roles = [config.role for config in configs]
    assert roles.count("orchestrator") == 1
    assert {config.settings.pipeline for config in configs} == {name}


def test_home_runs_stage_zero_on_the_doorbell_gateway_and_the_rest_on_the_mini_pc() -> None:
    configs = _load(DEPLOYMENTS / "home")
    hosts = {
        config.settings.device.stage_index: config.path.parent.name
        for config in configs
        if config.role == "device"
    }
    assert hosts == {0: "doorbell-gateway", 1: "mini-pc", 2: "mini-pc"}
    (orchestrator,) = [config for config in configs if config.role == "orchestrator"]
    assert orchestrator.path.parent.name == "ha-box"


def test_factory_replicates_the_heaviest_stage() -> None:
    configs = _load(DEPLOYMENTS / "factory")
    devices = [config for config in configs if config.role == "device"]
    manifest = load_manifest(devices[0].settings.device.bundle)  # type: ignore[arg-type]
    costs = [stage.body_macs + stage.head_macs for stage in manifest.stages]
    heaviest = costs.index(max(costs))
    replicas = [config for config in devices if config.settings.device.stage_index == heaviest]
    assert len(replicas) == 2
    assert len({config.path.parent for config in replicas}) == 2  # on two machines
    assert len({config.settings.device.group for config in replicas}) == 1


def test_cli_check_prints_what_each_file_runs() -> None:
    result = _check(str(DEPLOYMENTS / "factory"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "runs: distree device, stage 2 of 3 of mnist-wrn16-1" in result.stdout
    assert "stage 2 x2" in result.stdout
    assert "0 error(s)" in result.stderr


def _device(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text("role: device\npipeline: p\n" + text)
    return path


def test_check_finds_missing_stages_split_replicas_and_duplicate_ids(tmp_path: Path) -> None:
    _device(tmp_path, "a.yaml", "device:\n  stage_index: 0\n  device_id: a\n")
    _device(tmp_path, "b.yaml", "device:\n  stage_index: 2\n  device_id: a\n  group: one\n")
    _device(tmp_path, "c.yaml", "device:\n  stage_index: 2\n  device_id: c\n  group: two\n")
    report = check_deployment(_load(tmp_path))
    text = "\n".join(report.errors)
    assert "no device runs stage(s) 1" in text
    assert "replicas of stage 2 must share one subscription group" in text
    assert "device_id 'a' already used" in text
    assert any("no orchestrator" in warning for warning in report.warnings)
    result = _check(str(tmp_path))
    assert result.returncode == 1
    assert "error: " in result.stdout


def test_check_finds_services_on_different_bundles_and_rival_orchestrators(tmp_path: Path) -> None:
    for index in range(3):
        _device(tmp_path, f"s{index}.yaml", f"device:\n  stage_index: {index}\n  device_id: d{index}\n")
    for name in ("o1.yaml", "o2.yaml"):
        (tmp_path / name).write_text(
            "role: orchestrator\npipeline: p\norchestrator:\n  bundle: reference:cifar10\n"
        )
    text = "\n".join(check_deployment(_load(tmp_path)).errors)
    assert "services disagree on the bundle" in text
    for name in ("o1.yaml", "o2.yaml"):
        (tmp_path / name).write_text("role: orchestrator\npipeline: p\n")
    text = "\n".join(check_deployment(_load(tmp_path)).errors)
    assert "2 orchestrators would fight over the policy" in text


def test_check_reports_a_broken_file_and_goes_on(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("device:\n  stage_indx: 1\n")
    _device(tmp_path, "good.yaml", "device:\n  stage_index: 0\n")
    result = _check(str(tmp_path / "bad.yaml"), str(tmp_path / "good.yaml"))
    assert result.returncode == 1
    assert "bad.yaml: error: " in result.stdout and "did you mean 'device.stage_index'" in result.stdout
    assert "good.yaml: ok" in result.stdout


def test_cameras_feed_their_pipeline_and_name_classes_the_bundle_knows(tmp_path: Path) -> None:
    home = _load(DEPLOYMENTS / "home")
    (camera,) = [config for config in home if config.role == "camera"]
    assert camera.path.parent.name == "doorbell-gateway"
    factory = _load(DEPLOYMENTS / "factory")
    assert sorted(c.settings.camera.camera_id for c in factory if c.role == "camera") == ["line-1", "line-2"]
    for index in range(3):
        _device(tmp_path, f"s{index}.yaml", f"device:\n  stage_index: {index}\n  device_id: d{index}\n")
    (tmp_path / "o.yaml").write_text("role: orchestrator\npipeline: p\n")
    for name in ("c1.yaml", "c2.yaml"):
        (tmp_path / name).write_text(
            "role: camera\npipeline: p\ncamera:\n  camera_id: d0\n  classes: ['7', cat]\n"
        )
    text = "\n".join(check_deployment(_load(tmp_path)).errors)
    assert "classes cat are not among mnist-wrn16-1's" in text
    assert "camera_id 'd0' already used" in text


def test_one_file_is_checked_on_its_own() -> None:
    result = _check(str(DEPLOYMENTS / "home" / "doorbell-gateway" / "camera-doorbell.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "runs: distree camera 'doorbell'" in result.stdout
    assert "detects: cat, dog, bird" in result.stdout
