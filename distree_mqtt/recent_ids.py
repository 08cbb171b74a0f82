"""Bounded memory of request ids already answered (QoS 1 may deliver twice)."""

from __future__ import annotations

import threading
from collections import deque


class RecentIds:
    """Bounded memory of request ids already handled (QoS 1 may redeliver)."""

    def __init__(self, capacity: int = 8192) -> None:
        self._order: deque[str] = deque()
        self._seen: set[str] = set()
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, request_id: str) -> bool:
        """True when the id is new."""
        with self._lock:
            if request_id in self._seen:
                return False
            self._seen.add(request_id)
            self._order.append(request_id)
            if len(self._order) > self._capacity:
                self._seen.discard(self._order.popleft())
            return True
