"""The motion gate on synthetic frames: noise is not motion, a moving square is, where watched."""

from __future__ import annotations

import numpy as np
import pytest

from distree_mqtt.camera.motion import (
    BackgroundSubtraction,
    FrameDifference,
    MotionGate,
    TriggerPolicy,
    make_detector,
)

WIDTH, HEIGHT = 200, 150


def frame(square_at: tuple[int, int] | None, seed: int, size: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(40, 6, size=(HEIGHT, WIDTH)), 0, 255).astype(np.uint8)
    if square_at is not None:
        x, y = square_at
        image[y : y + size, x : x + size] = 220
    return np.repeat(image[:, :, None], 3, axis=2)


def run(gate: MotionGate, positions: list[tuple[int, int] | None]):
    return [gate.observe(frame(position, seed)) for seed, position in enumerate(positions)]


@pytest.mark.parametrize("method", ["diff", "mog2"])
def test_sensor_noise_alone_is_not_motion(method: str) -> None:
    gate = MotionGate(make_detector(method, 25, 50), WIDTH, HEIGHT, min_area_fraction=0.002)
    readings = run(gate, [None] * 15)
    assert not any(reading.moving for reading in readings)


@pytest.mark.parametrize("method", ["diff", "mog2"])
def test_a_moving_square_is_motion_and_its_box_covers_it(method: str) -> None:
    gate = MotionGate(make_detector(method, 25, 50), WIDTH, HEIGHT)
    positions = [(20, 60)] * 5 + [(20 + 4 * step, 60) for step in range(1, 6)]
    readings = run(gate, positions)
    assert not any(reading.moving for reading in readings[1:5])
    assert all(reading.moving for reading in readings[5:])
    box = readings[-1].box
    assert box is not None
    # The square is at x 40..60: the box covers it (diff also sees where it just left).
    assert box.x <= 40 and box.x + box.width >= 60 and box.y <= 60 and box.y + box.height >= 80
    assert box.width <= 40 and box.height <= 30


def test_motion_outside_the_roi_or_under_the_mask_does_not_count() -> None:
    positions = [(20, 60), (30, 60), (40, 60)]
    outside = MotionGate(FrameDifference(), WIDTH, HEIGHT, roi=(100, 0, 100, 150))
    assert not any(r.moving for r in run(outside, positions))
    masked = MotionGate(FrameDifference(), WIDTH, HEIGHT, mask=[[(0, 40), (100, 40), (100, 110), (0, 110)]])
    assert not any(r.moving for r in run(masked, positions))
    watched = MotionGate(FrameDifference(), WIDTH, HEIGHT, roi=(0, 0, 100, 150))
    assert any(r.moving for r in run(watched, positions))


def test_the_minimum_changed_area_is_a_fraction_of_the_watched_area() -> None:
    positions = [(20, 60), (24, 60)]
    small = MotionGate(FrameDifference(), WIDTH, HEIGHT, min_area_fraction=0.001)
    large = MotionGate(FrameDifference(), WIDTH, HEIGHT, min_area_fraction=0.2)
    assert run(small, positions)[1].moving
    reading = run(large, positions)[1]
    assert not reading.moving and 0 < reading.changed_fraction < 0.2


def test_frames_wider_than_the_process_width_are_analysed_smaller_boxes_stay_in_pixels() -> None:
    gate = MotionGate(FrameDifference(), WIDTH, HEIGHT, process_width=100)
    assert gate.scale == 0.5
    readings = run(gate, [(100, 60), (110, 60)])
    box = readings[1].box
    assert box is not None and 90 <= box.x <= 104 and box.x + box.width >= 126


def test_a_still_object_melts_into_the_mog2_background() -> None:
    gate = MotionGate(BackgroundSubtraction(history_frames=10), WIDTH, HEIGHT)
    readings = run(gate, [None] * 3 + [(50, 50)] * 60)
    assert readings[3].moving
    assert not any(reading.moving for reading in readings[-10:])


def test_a_bad_roi_or_mask_is_refused_with_the_frame_size() -> None:
    with pytest.raises(ValueError, match="does not fit the 200x150 frame"):
        MotionGate(FrameDifference(), WIDTH, HEIGHT, roi=(150, 0, 100, 100))
    with pytest.raises(ValueError, match="outside the 200x150 frame"):
        MotionGate(FrameDifference(), WIDTH, HEIGHT, mask=[[(0, 0), (500, 0), (0, 10)]])
    with pytest.raises(ValueError, match="nothing left to watch"):
        MotionGate(
            FrameDifference(), WIDTH, HEIGHT, roi=(0, 0, 50, 50), mask=[[(0, 0), (60, 0), (60, 60), (0, 60)]]
        )
    with pytest.raises(ValueError, match="unknown motion method"):
        make_detector("optical-flow")


def test_a_frame_of_another_size_is_refused() -> None:
    gate = MotionGate(FrameDifference(), WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="frame size changed"):
        gate.observe(np.zeros((10, 10, 3), np.uint8))


def test_cooldown_and_keyframes() -> None:
    policy = TriggerPolicy(cooldown_s=1.0)
    decisions = [policy.decide(t, moving=True) for t in (0.0, 0.5, 0.99, 1.0, 1.5, 2.2)]
    assert decisions == ["motion", None, None, "motion", None, "motion"]
    assert TriggerPolicy().decide(0.0, moving=False) is None
    keyframes = TriggerPolicy(keyframe_interval_s=2.0)
    decisions = [keyframes.decide(t, moving=t in (3.0,)) for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    # The first frame is a keyframe; motion resets the keyframe clock.
    assert decisions == ["keyframe", None, "keyframe", "motion", None, "keyframe", None]
