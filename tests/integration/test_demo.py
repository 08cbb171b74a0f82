"""`distree demo` end to end: separate processes, a real broker, a summary at the end."""

from __future__ import annotations

import pytest

from distree_mqtt.demo import DemoOptions, format_summary, run_demo


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_the_demo_runs_to_completion(broker: str) -> None:
    summary = run_demo(DemoOptions(images=60, rate=20, broker=broker, progress=False))
    assert summary["requests"] == 60
    assert summary["outcomes"].get("result", 0) + summary["outcomes"].get("degraded", 0) == 60
    assert summary["accuracy"] >= 0.9
    assert abs(sum(summary["exit_share"]) - 1) < 1e-9
    assert summary["protocol"] == ("5" if broker == "mosquitto" else "3.1.1")
    assert "accuracy:" in format_summary(summary)
