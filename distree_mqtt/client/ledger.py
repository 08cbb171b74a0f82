"""The client's ledger of requests: every one sent, and how it ended (docs/protocol.md,
"Terminal outcomes").

Pure bookkeeping, no MQTT: the Pipeline calls `sent` when it publishes a request, `settle`
for each outcome that reaches it and `lose` when deadline + grace passed with nothing at all.
The first outcome of a request is its answer; any later one is counted as a duplicate.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("result", "degraded", "timeout", "rejected")
LOST = "lost"


@dataclass
class RequestRecord:
    """One request: when it left, its first outcome (or `lost`), and any later ones."""

    sent_at: float
    outcome: str | None = None
    settled_at: float | None = None
    latency_ms: float | None = None
    extra: list[str] = field(default_factory=list)
    fingerprint: str | None = None  # of the message that settled it


class Ledger:
    """Counts per run: sent, each outcome, lost, duplicates; per-request records of the most
    recent `capacity` requests (totals stay exact beyond that). Thread-safe."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.sent_count = 0
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.lost = 0
        self.duplicates = 0
        # The same answer message delivered again (MQTT QoS 1 is at-least-once: a publish whose
        # acknowledgement was lost, e.g. in a broker restart, is sent again): not a second answer.
        self.redelivered = 0
        self.unknown = 0  # outcomes for request ids this client never sent (or forgot)
        self._records: OrderedDict[str, RequestRecord] = OrderedDict()
        self._lock = threading.Lock()

    def sent(self, request_id: str, at: float) -> None:
        with self._lock:
            self.sent_count += 1
            self._records[request_id] = RequestRecord(sent_at=at)
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)

    def settle(
        self,
        request_id: str,
        outcome: str,
        at: float,
        latency_ms: float | None = None,
        fingerprint: str | None = None,
    ) -> bool:
        """Record an outcome; True when it is the request's first (its answer). `fingerprint`
        identifies the answer message, so a redelivered copy of it is not a duplicate."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
        return self._settle(request_id, outcome, at, latency_ms, fingerprint)

    def lose(self, request_id: str, at: float) -> bool:
        """No outcome by deadline + grace; True unless the request had been settled already."""
        return self._settle(request_id, LOST, at, None)

    def _settle(
        self,
        request_id: str,
        outcome: str,
        at: float,
        latency_ms: float | None,
        fingerprint: str | None = None,
    ) -> bool:
        with self._lock:
            record = self._records.get(request_id)
            if record is None:
                self.unknown += 1
                return False
            if record.outcome is not None:
                if fingerprint is not None and fingerprint == record.fingerprint:
                    self.redelivered += 1
                    return False
                record.extra.append(outcome)
                self.duplicates += 1
                return False
            record.outcome, record.settled_at, record.latency_ms = outcome, at, latency_ms
            record.fingerprint = fingerprint
            if outcome == LOST:
                self.lost += 1
            else:
                self.outcomes[outcome] += 1
            return True

    @property
    def pending(self) -> int:
        """Sent and not yet settled (neither an outcome nor lost)."""
        with self._lock:
            return self.sent_count - self.lost - sum(self.outcomes.values())

    @property
    def degraded_share(self) -> float:
        return self.outcomes["degraded"] / self.sent_count if self.sent_count else 0.0

    def records(self) -> list[RequestRecord]:
        """Copies of the kept per-request records, oldest first."""
        with self._lock:
            return [
                RequestRecord(r.sent_at, r.outcome, r.settled_at, r.latency_ms, list(r.extra))
                for r in self._records.values()
            ]

    def latencies_ms(self) -> list[float]:
        with self._lock:
            return [r.latency_ms for r in self._records.values() if r.latency_ms is not None]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "sent": self.sent_count,
                "outcomes": dict(self.outcomes),
                "lost": self.lost,
                "duplicates": self.duplicates,
                "redelivered": self.redelivered,
                "unknown": self.unknown,
                "pending": self.sent_count - self.lost - sum(self.outcomes.values()),
                "degraded_share": self.outcomes["degraded"] / self.sent_count if self.sent_count else 0.0,
            }
