from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distree_mqtt.settings import BrokerSettings, load_settings
from distree_mqtt.topics import Topics, escape_level


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_escaped_levels_never_carry_wildcards_separators_or_non_ascii(value) -> None:
    level = escape_level(value)
    assert level and level.isascii()
    assert not any(char in level for char in "+#/$\x00 ")


def test_escaping_is_injective_on_typical_ids() -> None:
    ids = ["cam/1", "cam%2F1", "cam+1", "cam#1", "cam 1", "cam1"]
    assert len({escape_level(i) for i in ids}) == len(ids)
    assert escape_level("front-door_cam.2") == "front-door_cam.2"


def test_topic_layout() -> None:
    topics = Topics("distree", "home")
    assert topics.stage_input(1) == "distree/home/stage/1/in"
    assert topics.stage_input_shared(1, "g") == "$share/g/distree/home/stage/1/in"
    assert topics.results("a/b") == "distree/home/results/a%2Fb"
    assert topics.control_set("mode") == "distree/home/control/set/mode"
    with pytest.raises(ValueError, match="single topic level"):
        Topics("distree", "a/b")
    with pytest.raises(ValueError, match="without"):
        Topics("distree", "a+")


def test_settings_precedence_defaults_file_env_overrides(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "distree.toml"
    config.write_text(
        'pipeline = "from-file"\n[device]\nstage_index = 1\nslowdown = 2.0\n[broker]\nurl = "mqtt://file:1883"\n'
    )
    monkeypatch.setenv("DISTREE_DEVICE__SLOWDOWN", "3.0")
    settings = load_settings(config, device={"queue_capacity": 7})
    assert settings.pipeline == "from-file"
    assert settings.device.stage_index == 1
    assert settings.device.slowdown == 3.0  # env beats file
    assert settings.device.queue_capacity == 7
    assert settings.broker.endpoint().host == "file"
    monkeypatch.setenv("DISTREE_BROKER__URL", "mqtt://env:1999")
    assert load_settings(config, broker={"url": "mqtt://cli:2000"}).broker.endpoint().port == 2000


def test_unknown_settings_and_bad_urls_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[device]\nstage = 1\n")
    with pytest.raises(ValueError, match="stage"):
        load_settings(config)
    with pytest.raises(ValueError, match="broker url must look like"):
        BrokerSettings(url="http://host")
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_passwords_come_from_the_url_a_file_or_a_credential_and_are_never_shown(
    tmp_path: Path, monkeypatch
) -> None:
    settings = BrokerSettings(url="mqtts://gw:s3cret@broker.lan")
    endpoint = settings.endpoint()
    assert (endpoint.port, endpoint.tls, endpoint.password) == (8883, True, "s3cret")
    assert "s3cret" not in repr(endpoint) and "s3cret" not in settings.redacted_url
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    assert BrokerSettings(url="mqtt://gw@h", password_file=secret).endpoint().password == "from-file"
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "broker-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert BrokerSettings(url="mqtt://gw@h").endpoint().password == "from-systemd"
    (credentials / "broker-password").write_text("\n")  # the installer's empty placeholder
    assert BrokerSettings(url="mqtt://gw:in-url@h").endpoint().password == "in-url"
