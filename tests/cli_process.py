"""Run the `distree` command line as its own process, the way users and services do."""

from __future__ import annotations

import subprocess
import sys


def run_distree(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distree_mqtt.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
