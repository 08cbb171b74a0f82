"""Detections from results: debounce, updates on a better score, end after a quiet spell."""

from __future__ import annotations

import itertools

from distree_mqtt.camera.tracker import DetectionTracker, Observation

_ids = itertools.count()


def seen(
    class_name: str | None, confidence: float | None, at: float, label: int | None = None
) -> Observation:
    if label is None and class_name is not None and class_name.isdigit():
        label = int(class_name)
    return Observation(f"r{next(_ids)}", label, class_name, confidence, 0, False, at)


def tracker(**options) -> DetectionTracker:
    defaults = {"min_confidence": 0.6, "min_hits": 2, "hit_window_s": 3.0, "end_after_s": 2.0}
    return DetectionTracker(
        "porch", ["3", "7"], new_id=lambda start: f"id-{start}", **{**defaults, **options}
    )


def test_a_detection_starts_after_min_hits_and_ends_after_a_quiet_spell() -> None:
    track = tracker()
    first = track.observe(seen("3", 0.7, 10.0))
    assert first.events == [] and first.detected == {}
    second = track.observe(seen("3", 0.8, 10.5))
    assert [e.type for e in second.events] == ["new"] and second.detected == {"3": True}
    new = second.events[0].payload()
    assert new["id"] == "id-10.0" and new["start_time"] == 10.0 and new["end_time"] is None
    assert new["before"] is None and new["after"]["top_score"] == 0.8 and new["hits"] == 2
    assert second.snapshot_worthy
    worse = track.observe(seen("3", 0.65, 11.0))
    assert worse.events == [] and not worse.snapshot_worthy
    better = track.observe(seen("3", 0.95, 11.5))
    assert [e.type for e in better.events] == ["update"] and better.snapshot_worthy
    assert better.events[0].before is not None and better.events[0].before["top_score"] == 0.8
    assert better.events[0].detection["top_score"] == 0.95 and better.events[0].detection["hits"] == 4
    assert track.tick(13.4).events == []
    end = track.tick(13.5)
    assert [e.type for e in end.events] == ["end"] and end.detected == {"3": False}
    payload = end.events[0].payload()
    assert (
        payload["end_time"] == 11.5 and payload["before"]["end_time"] is None and payload["id"] == "id-10.0"
    )
    assert track.active == {}


def test_debounce_hits_must_fall_within_the_window() -> None:
    track = tracker(hit_window_s=1.0)
    assert track.observe(seen("7", 0.9, 0.0)).events == []
    assert track.observe(seen("7", 0.9, 2.0)).events == []  # the first hit is too old
    assert [e.type for e in track.observe(seen("7", 0.9, 2.5)).events] == ["new"]


def test_unconfident_unknown_and_unconfigured_results_are_ignored() -> None:
    track = tracker(min_hits=1)
    for observation in (
        seen("3", 0.5, 0.0),
        seen("5", 0.99, 0.1),
        seen(None, 0.99, 0.2),
        seen("3", None, 0.3),
        seen("3", float("nan"), 0.4),
    ):
        assert track.observe(observation).events == []
    assert track.ignored == 5
    # A missing class name falls back to the label.
    assert [e.type for e in track.observe(Observation("x", 3, None, 0.9, 0, False, 1.0)).events] == ["new"]


def test_per_class_minimum_confidence() -> None:
    thresholds = {"3": 0.9}
    track = tracker(min_confidence=lambda name: thresholds.get(name, 0.5), min_hits=1)
    assert track.observe(seen("3", 0.8, 0.0)).events == []
    assert [e.type for e in track.observe(seen("7", 0.55, 0.0)).events] == ["new"]


def test_two_classes_live_side_by_side_and_a_result_reports_due_ends_first() -> None:
    track = tracker(min_hits=1, end_after_s=1.0)
    track.observe(seen("3", 0.9, 0.0))
    update = track.observe(seen("7", 0.9, 1.5))
    assert [(e.type, e.detection["class_name"]) for e in update.events] == [("end", "3"), ("new", "7")]
    assert update.detected == {"3": False, "7": True}
    stopped = track.end_all()
    assert [(e.type, e.detection["class_name"]) for e in stopped.events] == [("end", "7")]
    assert stopped.detected == {"7": False}
