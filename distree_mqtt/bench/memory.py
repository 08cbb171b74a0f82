"""Resident memory of the processes a benchmark started, sampled from /proc (Linux)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB; None once it has exited (or off Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """Samples every named process every `interval_s` on a thread: [{"t": s, name: KiB}, ...]."""

    def __init__(self, pids: dict[str, int], interval_s: float = 1.0) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(time.monotonic() - self._started, 2)}
        row.update({name: rss_kib(pid) for name, pid in self.pids.items()})
        self.samples.append(row)
        return row

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return


def growth(samples: list[dict[str, Any]], since_t: float, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per process: RSS at the first sample from `since_t`, at the last sample, their ratio."""
    after = [row for row in samples if row["t"] >= since_t] or samples[-1:]
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [row[name] for row in after if row.get(name)]
        if not values:
            summary[name] = {"start_kib": None, "final_kib": None, "max_kib": None, "ratio": None}
            continue
        summary[name] = {
            "start_kib": values[0],
            "final_kib": values[-1],
            "max_kib": max(values),
            "ratio": round(values[-1] / values[0], 4),
        }
    return summary
