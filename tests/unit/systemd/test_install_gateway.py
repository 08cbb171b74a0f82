"""systemd/install-gateway.sh lays out a gateway under DESTDIR (no packages installed here)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "systemd" / "install-gateway.sh"


def _install(destdir: Path, *args: str, prefix: str = "/srv/distree") -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DESTDIR": str(destdir), "PREFIX": prefix}
    return subprocess.run(
        ["bash", str(SCRIPT), "--skip-pip", *args], capture_output=True, text=True, env=environ, timeout=60
    )


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    folder = tmp_path / "machine"
    folder.mkdir()
    (folder / "stage-0.yaml").write_text("role: device\ndevice:\n  stage_index: 0\n")
    (folder / "camera-front.yaml").write_text("role: camera\n")
    (folder / "orchestrator.yaml").write_text("role: orchestrator\n")
    return folder


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_lays_out_units_settings_and_credentials(tmp_path: Path, machine: Path) -> None:
    root = tmp_path / "root"
    result = _install(root, "--machine", str(machine))
    assert result.returncode == 0, result.stderr
    units = root / "etc/systemd/system"
    for unit, command in [
        ("distree-device@.service", "device --config /etc/distree/%i.yaml"),
        ("distree-camera@.service", "camera --config /etc/distree/%i.yaml"),
        ("distree-orchestrator.service", "orchestrator --config /etc/distree/orchestrator.yaml"),
    ]:
        assert f"ExecStart=/srv/distree/venv/bin/distree {command}\n" in (units / unit).read_text()
        assert "/opt/distree" not in (units / unit).read_text()
    assert (units / "mosquitto.service.d/distree.conf").is_file()
    etc = root / "etc/distree"
    assert (etc / "stage-0.yaml").read_text() == (machine / "stage-0.yaml").read_text()
    assert _mode(etc / "stage-0.yaml") == 0o644
    assert _mode(etc / "credentials") == 0o700
    assert _mode(etc / "credentials/broker-password") == 0o600
    assert not (root / "srv").exists()  # --skip-pip: no virtual environment
    assert (
        "systemctl enable --now distree-camera@camera-front distree-orchestrator distree-device@stage-0"
        in result.stdout
    )


def test_never_overwrites_an_operators_files(tmp_path: Path, machine: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/distree/credentials").mkdir(parents=True)
    (root / "etc/distree/stage-0.yaml").write_text("role: device\n# tuned on site\n")
    (root / "etc/distree/credentials/broker-password").write_text("secret\n")
    for _ in range(2):  # and running it again changes nothing either
        result = _install(root, "--machine", str(machine))
        assert result.returncode == 0, result.stderr
    assert (root / "etc/distree/stage-0.yaml").read_text() == "role: device\n# tuned on site\n"
    assert (root / "etc/distree/credentials/broker-password").read_text() == "secret\n"
    assert "kept existing /etc/distree/stage-0.yaml" in result.stdout


def test_without_a_machine_it_points_at_the_examples(tmp_path: Path) -> None:
    result = _install(tmp_path / "root")
    assert result.returncode == 0, result.stderr
    assert "systemctl enable --now distree-device@<name>" in result.stdout
    assert list((tmp_path / "root/etc/distree").glob("*.yaml")) == []


@pytest.mark.parametrize(
    ("args", "prefix", "message"),
    [
        (["--bogus"], "/srv/distree", "unknown option --bogus"),
        (["--machine", "/nonexistent"], "/srv/distree", "--machine /nonexistent: no such directory"),
        ([], "relative/path", "PREFIX must be an absolute path"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], prefix: str, message: str) -> None:
    result = _install(tmp_path / "root", *args, prefix=prefix)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "root").exists()
