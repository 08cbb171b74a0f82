from __future__ import annotations

import time

import numpy as np
import pytest

from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.device.local import LocalPipeline
from distree_mqtt.device.runner import RejectedInput, StageRunner
from distree_mqtt.protocol import Policy
from distree_mqtt.reference import reference_bundle
from distree_mqtt.wire import EnvelopeHeader, TensorInfo, decode_envelope, encode_envelope
from distree_mqtt.wire.images import encode_image

BUNDLE = reference_bundle("mnist")
IMAGE = load_dataset(DataSpec()).test.images[5, 0]
NO_EXIT = Policy(version=1, mode="no-exit", thresholds=[None, None])


def _image_envelope(runner: StageRunner, deadline_s: float = 10.0, **changes) -> bytes:
    payload, shape = encode_image(IMAGE, "png")
    now = time.time()
    fields = {
        "request_id": "r1",
        "source": "test",
        "model_hash": runner.model_hash,
        "stage_index": 0,
        "created_at": now,
        "deadline": now + deadline_s,
        "tensor": TensorInfo(kind="image", codec="png", dtype="uint8", shape=shape, payload_bytes=0, crc32=0),
    }
    return encode_envelope(EnvelopeHeader(**(fields | changes)), payload)


def _prepare(runner: StageRunner, message: bytes):
    return runner.prepare(decode_envelope(message, 1 << 22), time.time(), len(message))


@pytest.fixture(scope="module")
def first() -> StageRunner:
    return StageRunner(BUNDLE, 0, "float32")


def test_forward_then_exit_with_a_full_hop_trace(first) -> None:
    (decision,), _ = first.run([_prepare(first, _image_envelope(first))], NO_EXIT)
    assert decision.kind == "forward" and decision.message is not None
    header = decode_envelope(decision.message, 1 << 22).header
    assert header.stage_index == 1 and header.best is not None and len(header.exit_probabilities) == 1
    assert header.tensor.shape == [16, 28, 28]


def test_threshold_zero_exits_at_once(first) -> None:
    (decision,), _ = first.run(
        [_prepare(first, _image_envelope(first))], Policy(version=2, mode="static", thresholds=[0.0, 0.0])
    )
    assert decision.kind == "exit" and decision.result is not None
    assert decision.result.outcome == "result" and decision.result.exit_stage == 0
    assert decision.result.class_name == str(decision.result.label)


NEVER_EARLY = Policy(version=1, mode="static", thresholds=[None, None])


def test_degraded_exits_for_deadline_and_offline_next_stage(first) -> None:
    late = _prepare(first, _image_envelope(first, deadline_s=0.0))
    (decision,), _ = first.run([late], NO_EXIT)
    assert decision.kind == "forward"  # the no-exit baseline never answers early
    (decision,), _ = first.run([late], NEVER_EARLY)
    assert decision.result is not None and decision.result.reason == "deadline" and decision.result.degraded
    (decision,), _ = first.run([_prepare(first, _image_envelope(first))], NEVER_EARLY, remaining_ms=60_000)
    assert decision.result is not None and decision.result.reason == "deadline"
    (decision,), _ = first.run([_prepare(first, _image_envelope(first))], NO_EXIT, next_stage_online=False)
    assert decision.result is not None and decision.result.reason == "next-stage-offline"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model_hash": "0" * 64}, "model hash"),
        ({"stage_index": 1}, "this device runs stage 0"),
        ({"exit_probabilities": [[0.1] * 10]}, "exit history"),
    ],
)
def test_inputs_for_another_model_or_stage_are_rejected(first, changes, reason) -> None:
    with pytest.raises(RejectedInput, match=reason):
        _prepare(first, _image_envelope(first, **changes))


def test_feature_shape_mismatch_is_rejected() -> None:
    second = StageRunner(BUNDLE, 1, "float32")
    now = time.time()
    header = EnvelopeHeader(
        request_id="r",
        source="s",
        model_hash=second.model_hash,
        stage_index=1,
        created_at=now,
        deadline=now + 5,
        exit_probabilities=[[0.1] * 10],
        tensor=TensorInfo(
            kind="features", codec="float32", dtype="float32", shape=[16, 28, 27], payload_bytes=0, crc32=0
        ),
    )
    with pytest.raises(RejectedInput, match="do not match stage input"):
        _prepare(second, encode_envelope(header, np.zeros((16, 28, 27), np.float32).tobytes()))


def test_local_pipeline_matches_the_whole_network() -> None:
    import torch

    from distree_mqtt.bundle import load_network
    from distree_mqtt.wire.images import preprocess

    manifest, network = load_network(BUNDLE)
    local = LocalPipeline(BUNDLE, codec="float32")
    result = local.infer(IMAGE, NO_EXIT)
    with torch.no_grad():
        logits = (
            network(preprocess(IMAGE[:, :, None], manifest.input)[None])[-1].logits
            / manifest.stages[-1].temperature
        )
    assert result.exit_stage == 2 and result.label == int(logits.argmax())
    assert result.confidence == pytest.approx(float(torch.softmax(logits, 1).max()), abs=1e-5)
