from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distree_mqtt.bundle import load_manifest
from distree_mqtt.cli.main import build_parser, main
from distree_mqtt.cli.model_commands import default_run_directory, train_overrides
from distree_mqtt.reference import reference_bundle

SUBCOMMANDS = [["train"], ["evaluate"], ["info"], ["bench"], ["bench", "offline"], ["demo"]]


@pytest.mark.parametrize("words", SUBCOMMANDS)
def test_every_command_has_help(words, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage: distree" in capsys.readouterr().out


def test_errors_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distree_mqtt.cli.main", "train", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "missing.toml: no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_names_the_field(tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('name = "x"\n[model]\ndepth = 12\n')
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert "depth must be 6n+4" in error and error.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "epochs", "message"),
    [("", "0", "epochs"), ("average_last_epochs = 3\n", "2", "average_last_epochs must not exceed")],
)
def test_an_epochs_override_is_checked_like_the_config(
    tmp_path: Path, capsys, extra, epochs, message
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'name = "x"\n[model]\ndepth = 10\n[train]\nepochs = 4\n{extra}')
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--epochs", epochs]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_seed_and_epochs_overrides_reach_the_config_and_the_run_directory() -> None:
    args = build_parser().parse_args(["train", "run.toml", "--seed", "3", "--epochs", "5"])
    assert train_overrides(args) == {"seed": 3, "epochs": 5}
    assert default_run_directory("cifar10", args.seed) == Path("runs/cifar10-seed3")
    plain = build_parser().parse_args(["train", "run.toml", "--freeze-backbone"])
    assert train_overrides(plain) == {"freeze_backbone": True}
    assert default_run_directory("cifar10", plain.seed) == Path("runs/cifar10")


def test_info_verifies_a_bundle_and_rejects_a_broken_one(tiny_bundle: Path, capsys) -> None:
    assert main(["info", str(tiny_bundle)]) == 0
    shown = capsys.readouterr().out
    assert "all stage hashes verified" in shown
    # The tiny bundle's profile has one point at 1e6 MACs; the operating point is that point.
    saving = 100 * (1 - 1e6 / load_manifest(tiny_bundle).no_exit_macs)
    assert f"operating point: thresholds [0.9, 0.8], {saving:.1f}% fewer MACs" in shown
    assert "validation loss 0.30 ± 0.10 points" in shown
    (tiny_bundle / "stage-1.safetensors").write_bytes(b"x")
    assert main(["info", str(tiny_bundle)]) == 2
    assert "stage-1.safetensors: hash mismatch" in capsys.readouterr().err


def test_evaluate_writes_json_markdown_and_plots(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["evaluate", str(reference_bundle("mnist")), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (out / "tradeoff-test.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "tradeoff-camera.png").stat().st_size > 10_000
    assert "| no exit (final only) |" in (out / "report.md").read_text()
    assert report["split_max_abs_logit_difference"] < 1e-5
    test_split = report["splits"]["test"]
    assert set(test_split["criteria"]) == {
        "max_softmax",
        "entropy",
        "margin",
        "patience",
        "feature_difference",
    }
    oracle_saving = test_split["oracle"]["macs_saving"]
    for criterion in test_split["criteria"].values():
        assert criterion["operating_point"]["macs_saving"] <= oracle_saving + 1e-9
