"""The unit files in systemd/: `systemd-analyze verify` clean, and their security exposure.

The units are checked unchanged inside a throwaway root (`--root`): the host's unit directory
(for targets such as sysinit.target) plus our units, with stub executables where the units'
commands will live on a gateway. Control cases prove the harness fails on a typo or on a
command that does not exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[3] / "systemd"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
HOST_UNITS = Path("/usr/lib/systemd/system")
DISTREE = "/opt/distree/venv/bin/distree"

# unit file -> (instance verified, subcommand, exposure bound we hold it to)
UNITS = {
    "distree-device@.service": ("distree-device@stage-0.service", "device", 1.5),
    "distree-orchestrator.service": ("distree-orchestrator.service", "orchestrator", 1.5),
    # Needs /dev/video*, the video group and no user namespace: a little more exposed.
    "distree-camera@.service": ("distree-camera@camera-doorbell.service", "camera", 2.0),
}

pytestmark = [
    pytest.mark.skipif(
        not Path(SYSTEMD_ANALYZE).is_file(), reason="systemd-analyze not installed (apt-get install systemd)"
    ),
    pytest.mark.skipif(
        not (HOST_UNITS / "sysinit.target").is_file(),
        reason=f"no systemd unit directory at {HOST_UNITS} to verify against",
    ),
]


def _settings(unit_file: Path) -> dict[str, list[str]]:
    """Key -> values (a key may repeat), across sections; comments and blank lines skipped."""
    settings: dict[str, list[str]] = {}
    for line in unit_file.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def _commands(unit_file: Path) -> set[str]:
    """Absolute executables of every Exec*= line (after systemd's prefixes such as `-` or `+`)."""
    commands = set()
    for key, values in _settings(unit_file).items():
        if key.startswith("Exec"):
            for value in values:
                executable = value.lstrip("-@:+!").split()[0]
                if executable.startswith("/"):
                    commands.add(executable)
    return commands


class UnitRoot:
    """A throwaway root directory holding the host's units, our units and stub commands."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.units = root / "etc/systemd/system"
        shutil.copytree(HOST_UNITS, root / HOST_UNITS.relative_to("/"), symlinks=True)
        shutil.copytree(SYSTEMD_DIR, self.units, ignore=shutil.ignore_patterns("*.md", "*.sh"))

    def stub_commands(self) -> None:
        unit_files = [
            *self.units.glob("*.service"),
            *(self.root / HOST_UNITS.relative_to("/")).glob("*.service"),
        ]
        for command in set().union(*(_commands(path) for path in unit_files)):
            stub = self.root / command.lstrip("/")
            if not stub.exists():
                stub.parent.mkdir(parents=True, exist_ok=True)
                stub.write_text("#!/bin/sh\nexit 0\n")
                stub.chmod(0o755)

    def verify(self, unit: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={self.root}", unit],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def exposure(self, unit: str) -> tuple[float, str]:
        result = subprocess.run(
            [SYSTEMD_ANALYZE, "security", "--offline=true", f"--root={self.root}", unit],
            capture_output=True,
            text=True,
            timeout=60,
        )
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", result.stdout)
        assert found, (
            f"no exposure level in systemd-analyze security output: {result.stdout[-500:]} {result.stderr}"
        )
        return float(found.group(1)), found.group(2)


@pytest.fixture
def unit_root(tmp_path: Path) -> UnitRoot:
    root = UnitRoot(tmp_path / "root")
    root.stub_commands()
    return root


@pytest.mark.parametrize("unit_file", UNITS)
def test_unit_verifies_clean(unit_root: UnitRoot, unit_file: str) -> None:
    instance, _, _ = UNITS[unit_file]
    result = unit_root.verify(instance)
    assert (result.returncode, result.stderr) == (0, "")


def test_mosquitto_drop_in_verifies_clean(unit_root: UnitRoot) -> None:
    if not (HOST_UNITS / "mosquitto.service").is_file():
        pytest.skip("mosquitto.service is not installed here; the drop-in extends it")
    result = unit_root.verify("mosquitto.service")
    assert (result.returncode, result.stderr) == (0, "")


def test_the_check_catches_a_typo(unit_root: UnitRoot) -> None:
    unit = unit_root.units / "distree-device@.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    result = unit_root.verify("distree-device@stage-0.service")
    assert "Unknown key 'WatchdogSecs'" in result.stderr


def test_the_check_catches_a_typo_in_the_drop_in(unit_root: UnitRoot) -> None:
    if not (HOST_UNITS / "mosquitto.service").is_file():
        pytest.skip("mosquitto.service is not installed here; the drop-in extends it")
    drop_in = unit_root.units / "mosquitto.service.d/distree.conf"
    drop_in.write_text(drop_in.read_text().replace("RestartSec=", "RestartSecond="))
    assert "Unknown key 'RestartSecond'" in unit_root.verify("mosquitto.service").stderr


def test_the_check_catches_a_missing_command(tmp_path: Path) -> None:
    root = UnitRoot(tmp_path / "root")  # no stubs: /opt/distree/venv/bin/distree does not exist
    result = root.verify("distree-orchestrator.service")
    assert result.returncode != 0
    assert f"{DISTREE} is not executable" in result.stderr


@pytest.mark.parametrize("unit_file", UNITS)
def test_unit_runs_the_documented_command_as_a_notify_daemon(unit_file: str) -> None:
    _, subcommand, _ = UNITS[unit_file]
    settings = _settings(SYSTEMD_DIR / unit_file)
    config = "/etc/distree/orchestrator.yaml" if "@" not in unit_file else "/etc/distree/%i.yaml"
    assert settings["ExecStart"] == [f"{DISTREE} {subcommand} --config {config}"]
    for key, value in {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "LoadCredential": "broker-password:/etc/distree/credentials/broker-password",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert settings.get(key) == [value], f"{unit_file}: {key}"
    assert settings["WatchdogSec"] and settings["StateDirectory"]
    if subcommand == "camera":
        assert settings["DeviceAllow"] == ["char-video4linux rw"]
        assert "PrivateDevices" not in settings
    else:
        assert settings["PrivateDevices"] == ["yes"]


@pytest.mark.parametrize("unit_file", UNITS)
def test_security_exposure(unit_root: UnitRoot, unit_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    instance, _, bound = UNITS[unit_file]
    level, verdict = unit_root.exposure(instance)
    with capsys.disabled():  # into the test log, passed or not
        print(f"\nsystemd-analyze security {instance}: exposure {level} {verdict} (bound {bound})")
    assert level <= bound
