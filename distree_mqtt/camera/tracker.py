"""Results of one camera -> detections with a life cycle (pure: no clock, no MQTT).

A class is *detected* after `min_hits` confident results of it within `hit_window_s` (the
debounce): event `new`, its ON/OFF topic turns ON. Later confident results of the class keep it
alive; an `update` event goes out when its best score improves. It ends (event `end`, OFF)
once the class has not been seen confidently for `end_after_s`. This follows Frigate's event
model (new / update / end, with `before` and `after`), with a classifier's one label per frame
in place of an object detector's boxes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["new", "update", "end"]


@dataclass(frozen=True)
class Observation:
    """One answered request."""

    request_id: str
    label: int | None
    class_name: str | None
    confidence: float | None
    exit_stage: int | None
    degraded: bool
    at: float  # unix seconds


@dataclass
class Detection:
    id: str
    class_name: str
    label: int | None
    start_time: float
    last_seen: float
    confidence: float
    top_score: float
    hits: int
    request_id: str
    exit_stage: int | None
    end_time: float | None = None

    def as_dict(self, camera: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera": camera,
            "class_name": self.class_name,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top_score": round(self.top_score, 6),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "last_seen": self.last_seen,
            "hits": self.hits,
            "request_id": self.request_id,
            "exit_stage": self.exit_stage,
        }


@dataclass(frozen=True)
class TrackerEvent:
    type: EventType
    detection: dict[str, Any]  # `after`: the detection now
    before: dict[str, Any] | None  # the detection before this event (None for `new`)

    def payload(self) -> dict[str, Any]:
        return {"type": self.type, **self.detection, "before": self.before, "after": self.detection}


@dataclass
class TrackerUpdate:
    events: list[TrackerEvent] = field(default_factory=list)
    detected: dict[str, bool] = field(default_factory=dict)  # class name -> ON (True) / OFF (False)
    snapshot_worthy: bool = False  # a detection started or improved with this observation


def _new_id(start_time: float) -> str:
    return f"{start_time:.6f}-{uuid.uuid4().hex[:6]}"


class DetectionTracker:
    def __init__(
        self,
        camera: str,
        classes: Iterable[str],
        min_confidence: Callable[[str], float] | float = 0.6,
        min_hits: int = 2,
        hit_window_s: float = 3.0,
        end_after_s: float = 2.0,
        new_id: Callable[[float], str] = _new_id,
    ) -> None:
        self.camera = camera
        self.classes = list(dict.fromkeys(classes))
        if callable(min_confidence):
            self._threshold = min_confidence
        else:
            fixed = float(min_confidence)
            self._threshold = lambda _name: fixed
        self.min_hits = min_hits
        self.hit_window_s = hit_window_s
        self.end_after_s = end_after_s
        self._new_id = new_id
        self.active: dict[str, Detection] = {}
        self._candidates: dict[str, list[float]] = {}
        self.ignored = 0  # results of other classes or below their minimum confidence

    def class_of(self, observation: Observation) -> str | None:
        if observation.class_name is not None:
            return observation.class_name
        return None if observation.label is None else str(observation.label)

    def observe(self, observation: Observation) -> TrackerUpdate:
        """Feed one result; ends that are due at its time are reported first."""
        update = self.tick(observation.at)
        name = self.class_of(observation)
        confidence = observation.confidence
        if (
            name is None
            or name not in self.classes
            or confidence is None
            or not confidence >= self._threshold(name)  # also False for NaN
        ):
            self.ignored += 1
            return update
        detection = self.active.get(name)
        if detection is not None:
            before = detection.as_dict(self.camera)
            detection.last_seen = max(detection.last_seen, observation.at)
            detection.hits += 1
            detection.confidence = confidence
            if confidence > detection.top_score:
                detection.top_score = confidence
                detection.request_id = observation.request_id
                detection.exit_stage = observation.exit_stage
                update.events.append(TrackerEvent("update", detection.as_dict(self.camera), before))
                update.snapshot_worthy = True
            return update
        hits = [t for t in self._candidates.get(name, []) if observation.at - t <= self.hit_window_s]
        hits.append(observation.at)
        if len(hits) < self.min_hits:
            self._candidates[name] = hits
            return update
        self._candidates.pop(name, None)
        detection = Detection(
            id=self._new_id(hits[0]),
            class_name=name,
            label=observation.label,
            start_time=hits[0],
            last_seen=observation.at,
            confidence=confidence,
            top_score=confidence,
            hits=len(hits),
            request_id=observation.request_id,
            exit_stage=observation.exit_stage,
        )
        self.active[name] = detection
        update.events.append(TrackerEvent("new", detection.as_dict(self.camera), None))
        update.detected[name] = True
        update.snapshot_worthy = True
        return update

    def tick(self, now: float) -> TrackerUpdate:
        """End the detections not seen for `end_after_s`; forget stale debounce hits."""
        update = TrackerUpdate()
        for name in [n for n, d in self.active.items() if now - d.last_seen >= self.end_after_s]:
            detection = self.active.pop(name)
            before = detection.as_dict(self.camera)
            detection.end_time = detection.last_seen
            update.events.append(TrackerEvent("end", detection.as_dict(self.camera), before))
            update.detected[name] = False
        for name in list(self._candidates):
            fresh = [t for t in self._candidates[name] if now - t <= self.hit_window_s]
            if fresh:
                self._candidates[name] = fresh
            else:
                del self._candidates[name]
        return update

    def end_all(self) -> TrackerUpdate:
        """On shutdown: every active detection ends (at when it was last seen)."""
        update = TrackerUpdate()
        for name, detection in list(self.active.items()):
            before = detection.as_dict(self.camera)
            detection.end_time = detection.last_seen
            update.events.append(TrackerEvent("end", detection.as_dict(self.camera), before))
            update.detected[name] = False
        self.active.clear()
        self._candidates.clear()
        return update
