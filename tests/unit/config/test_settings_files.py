"""Settings files: YAML (and TOML), unknown keys named with their file, roles, the schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from distree_mqtt.cli.config_commands import schema_markdown
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import DistreeSettings, load_settings
from distree_mqtt.settings_files import ConfigFileError


def _write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_file_then_environment_then_overrides(tmp_path: Path, monkeypatch) -> None:
    path = _write(
        tmp_path,
        "role: device\npipeline: home\ndevice:\n  stage_index: 2\n  slowdown: 2.0\n"
        "broker:\n  url: mqtt://file:1883\n",
    )
    monkeypatch.setenv("DISTREE_DEVICE__SLOWDOWN", "3.0")
    settings = load_settings(path, device={"queue_capacity": 9})
    assert (settings.pipeline, settings.device.stage_index) == ("home", 2)
    assert settings.device.slowdown == 3.0  # environment beats the file
    assert settings.device.queue_capacity == 9  # flags beat both
    assert settings.broker.endpoint().host == "file"


def test_unknown_keys_name_the_key_the_file_and_the_closest_match(tmp_path: Path) -> None:
    path = _write(tmp_path, "device:\n  stage_idx: 1\nbrokr:\n  url: mqtt://x\n")
    with pytest.raises(ConfigFileError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message
    assert "'device.stage_idx' (did you mean 'device.stage_index'?)" in message
    assert "'brokr' (did you mean 'broker'?)" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("device: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("device:\n  stage_index: -1\n", "invalid setting 'device.stage_index'"),
        ("broker:\n  url: http://host\n", "broker url must look like"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=expected) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_value_from_the_environment_is_not_blamed_on_the_file(tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path, "device:\n  stage_index: 1\n")
    monkeypatch.setenv("DISTREE_DEVICE__SLOWDOWN", "0.1")
    with pytest.raises(ConfigFileError, match=r"device\.slowdown' \(from DISTREE_") as caught:
        load_settings(path)
    assert str(path) not in str(caught.value)


def test_empty_file_means_defaults_and_toml_still_reads(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path, "")).pipeline == "default"
    toml = _write(tmp_path, 'pipeline = "t"\n[device]\nstage_index = 1\n', "old.toml")
    assert load_settings(toml).device.stage_index == 1


def test_a_daemon_refuses_a_file_written_for_another(tmp_path: Path) -> None:
    path = _write(tmp_path, "role: camera\n")
    with pytest.raises(ConfigFileError, match="configures a camera, not a device"):
        load_settings(path, command="device")
    assert load_settings(path, command="camera").role == "camera"
    assert load_settings(_write(tmp_path, "pipeline: p\n", "any.yaml"), command="device").pipeline == "p"


def test_reference_bundles_are_named_by_reference(tmp_path: Path) -> None:
    path = _write(tmp_path, "device:\n  bundle: reference:mnist\n")
    assert load_settings(path).device.bundle == reference_bundle("mnist")
    with pytest.raises(ValueError, match="unknown reference model"):
        load_settings(_write(tmp_path, "device:\n  bundle: reference:imagenet\n", "b.yaml"))


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for name, info in model.model_fields.items():
        found.append((prefix + name, info))
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found += _fields(info.annotation, f"{prefix}{name}.")
    return found


def test_every_setting_has_a_title_and_a_description() -> None:
    undocumented = [
        name
        for name, info in _fields(DistreeSettings)
        if not (getattr(info, "title", None) and getattr(info, "description", None))
    ]
    assert undocumented == []


def test_schema_lists_every_setting_once() -> None:
    text = schema_markdown()
    for name, info in _fields(DistreeSettings):
        annotation = getattr(info, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert f"## `{name}`" in text
        else:
            assert text.count(f"| `{name}` |") == 1, name


def test_the_settings_reference_in_docs_is_current() -> None:
    committed = Path(__file__).parents[3] / "docs" / "configuration.md"
    assert committed.read_text() == schema_markdown(), (
        "docs/configuration.md is stale: run `distree config schema > docs/configuration.md`"
    )
