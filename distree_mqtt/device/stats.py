"""Rolling statistics for telemetry: recent samples, percentiles, counters."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


class RollingSamples:
    """Samples from the last `window_s` seconds (at most `capacity`), thread-safe."""

    def __init__(self, window_s: float = 10.0, capacity: int = 4096) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, value: float, now: float | None = None) -> None:
        with self._lock:
            self._samples.append((now if now is not None else time.monotonic(), value))

    def mean(self, now: float | None = None) -> float:
        cutoff = (now if now is not None else time.monotonic()) - self.window_s
        with self._lock:
            values = [value for stamp, value in self._samples if stamp >= cutoff]
        return float(np.mean(values)) if values else 0.0

    def percentile(self, q: float, now: float | None = None) -> float:
        cutoff = (now if now is not None else time.monotonic()) - self.window_s
        with self._lock:
            values = [value for stamp, value in self._samples if stamp >= cutoff]
        return float(np.percentile(values, q)) if values else 0.0


@dataclass
class DeviceCounters:
    received: int = 0
    processed: int = 0
    exited: int = 0
    forwarded: int = 0
    degraded: int = 0
    rejected: int = 0
    duplicates: int = 0
    expired: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)
