"""What the camera sends matches the bundle's input spec once stage 0 has decoded it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from distree_mqtt.bundle import load_manifest
from distree_mqtt.camera.motion import Box
from distree_mqtt.camera.preprocess import crop_box, encode_input, prepare_input
from distree_mqtt.model.input_spec import InputSpec
from distree_mqtt.reference import reference_bundle
from distree_mqtt.wire.images import decode_image, preprocess

MNIST_SPEC = load_manifest(reference_bundle("mnist")).input
RGB_SPEC = InputSpec(
    shape=(3, 32, 32), color="rgb", mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2], class_names=["a", "b"]
)


def scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    frame[40:80, 60:100] = (10, 120, 250)  # BGR: orange
    return frame


def test_the_motion_crop_is_a_square_with_margin_kept_inside_the_roi() -> None:
    roi = Box(0, 0, 160, 120)
    assert crop_box(None, roi, 0.4) == roi
    assert crop_box(Box(60, 40, 40, 20), roi, 0.5) == Box(50, 20, 60, 60)
    # Near the edge it slides inside rather than shrinking.
    assert crop_box(Box(0, 0, 20, 20), roi, 1.0) == Box(0, 0, 40, 40)
    # Larger than the ROI: clipped to it.
    assert crop_box(Box(10, 10, 100, 100), Box(0, 0, 160, 100), 0.5) == Box(0, 0, 150, 100)


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_grey_input_through_stage_0_equals_the_spec_applied_to_the_cut(codec: str) -> None:
    frame = scene()
    cut = Box(60, 40, 40, 40)
    image = prepare_input(frame, cut, MNIST_SPEC)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    decoded = decode_image(encode_input(image, codec), codec, [28, 28, 1])
    tensor = preprocess(decoded, MNIST_SPEC)
    assert tensor.shape == (1, 28, 28)
    grey = cv2.cvtColor(frame[40:80, 60:100], cv2.COLOR_BGR2GRAY)
    expected = MNIST_SPEC.normalise(
        torch.from_numpy(cv2.resize(grey, (28, 28), interpolation=cv2.INTER_AREA))[None, None]
    )[0]
    tolerance = 1e-5 if codec == "png" else 0.1
    assert torch.allclose(tensor, expected, atol=tolerance)


def test_rgb_input_keeps_colour_order_and_invert_flips_grey_levels() -> None:
    frame = scene()
    image = prepare_input(frame, Box(60, 40, 40, 40), RGB_SPEC)
    assert image.shape == (32, 32, 3)
    tensor = preprocess(decode_image(encode_input(image, "png"), "png", [32, 32, 3]), RGB_SPEC)
    red = (250 / 255 - 0.5) / 0.2
    assert tensor.shape == (3, 32, 32) and tensor[0].mean().item() == pytest.approx(red, abs=1e-4)
    inverted = prepare_input(frame, Box(60, 40, 40, 40), MNIST_SPEC, invert=True)
    assert np.array_equal(inverted, 255 - prepare_input(frame, Box(60, 40, 40, 40), MNIST_SPEC))


def test_an_empty_cut_is_an_error_not_a_crash() -> None:
    with pytest.raises(ValueError, match="empty"):
        prepare_input(scene(), Box(500, 500, 10, 10), MNIST_SPEC)
