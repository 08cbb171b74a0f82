from __future__ import annotations

import json
from pathlib import Path

from distree_mqtt.evaluation.render import render_markdown

REPORT = Path(__file__).parents[3] / "docs" / "benchmarks" / "offline-mnist" / "report.json"


def test_the_training_line_says_when_the_bundle_holds_averaged_weights() -> None:
    report = json.loads(REPORT.read_text())
    plain = render_markdown(report, [])
    assert f"Training: {report['training']['epochs']} epochs in" in plain
    assert "mean of the last" not in plain
    report["training"]["averaged_epochs"] = 6
    assert "The bundle holds the mean of the last 6 epochs' weights." in render_markdown(report, [])
    report["training"]["swa_learning_rate"] = 0.05
    assert (
        "The bundle holds the mean of the last 6 epochs' weights (stochastic weight averaging at a "
        "constant learning rate of 0.05 after the cosine schedule)." in render_markdown(report, [])
    )


def test_the_header_states_the_selection_rule_and_the_training_hardware() -> None:
    report = json.loads(REPORT.read_text())
    report["tolerance_points"], report["selection_confidence_z"] = 0.5, 1.0
    report["training"]["hardware"] = "NVIDIA H200"
    text = render_markdown(report, [])
    assert "plus 1 standard error of that per-image paired loss, is within 0.5 point" in text
    assert "(NVIDIA H200, seed" in text
    del report["training"]["hardware"]
    assert f"({report['training']['threads']} CPU threads, seed" in render_markdown(report, [])
