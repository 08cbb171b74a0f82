"""Terminal outcomes without a broker: the client settles from progress, devices drop what the
client has settled, answer late work at once, and acknowledge inputs only after answering."""

from __future__ import annotations

import time

import numpy as np
import pytest

from distree_mqtt.client import Pipeline, RequestTimeout
from distree_mqtt.device.runner import StageRunner
from distree_mqtt.device.service import DeviceService
from distree_mqtt.protocol import DeviceInfo, Policy, Progress, Result
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message
from distree_mqtt.wire import EnvelopeHeader, TensorInfo, decode_envelope, encode_envelope
from distree_mqtt.wire.images import encode_image
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="outcomes")
NO_EXIT = Policy(version=1, mode="static", thresholds=[None, None])


class AckingTransport(MemoryTransport):
    """Records acknowledgements, and what had been published when each came."""

    def __init__(self) -> None:
        super().__init__()
        self.acks: list[tuple[tuple[int, int] | None, int]] = []

    def ack(self, ack_id: tuple[int, int] | None) -> None:
        self.acks.append((ack_id, len(self.published)))


def _settings(**sections):
    return load_settings(pipeline="outcomes", **sections)


def _wait(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_the_client_answers_from_progress_and_counts_the_rest_lost() -> None:
    transport = MemoryTransport()
    settings = _settings(client={"source": "cam", "grace_ms": 100})
    with Pipeline(settings=settings, transport=transport) as client:
        image = np.zeros((28, 28), np.uint8)
        helped, silent = (client.submit(image, deadline_ms=50, request_id=f"r{i}") for i in range(2))
        header = decode_envelope(transport.on(TOPICS.stage_input(0))[0], 1 << 22).header
        assert header.settle_by == pytest.approx(header.deadline + 0.1)
        progress = Progress(
            request_id="r0", label=7, confidence=0.6, exit_stage=1, stage_reached=2, deadline=1.0
        )
        transport.deliver(TOPICS.progress("cam"), progress.model_dump_json())
        transport.deliver(TOPICS.progress("cam"), b"garbage")
        result = helped.result(timeout=5)
        assert (result.outcome, result.label, result.exit_stage) == ("degraded", 7, 1)
        assert result.reason == "stage 2 did not answer" and result.degraded
        with pytest.raises(RequestTimeout):
            silent.result(timeout=5)
        late = Result(request_id="r0", source="cam", outcome="result", label=7)
        transport.deliver(TOPICS.results("cam"), late.model_dump_json())
        summary = client.ledger.summary()
    assert summary["outcomes"]["degraded"] == 1 and summary["lost"] == 1
    assert summary["duplicates"] == 1 and client.invalid_results == 1


def test_a_timeout_from_the_pipeline_raises_with_its_result() -> None:
    transport = MemoryTransport()
    with Pipeline(settings=_settings(client={"source": "cam"}), transport=transport) as client:
        future = client.submit(np.zeros((28, 28), np.uint8), deadline_ms=5000, request_id="t0")
        answer = Result(request_id="t0", source="cam", outcome="timeout", reason="deadline passed")
        transport.deliver(TOPICS.results("cam"), answer.model_dump_json())
        with pytest.raises(RequestTimeout) as raised:
            future.result(timeout=5)
    assert raised.value.result is not None and client.ledger.outcomes["timeout"] == 1


def _stage1_input(deadline_in_s: float, settle_in_s: float | None) -> bytes:
    """A stage-1 envelope as stage 0 forwards it (with its best prediction so far)."""
    runner = StageRunner(reference_bundle("mnist"), 0)
    payload, shape = encode_image(np.zeros((28, 28), np.uint8), "raw")
    now = time.time()
    header = EnvelopeHeader(
        request_id="q1",
        source="cam",
        model_hash=runner.model_hash,
        stage_index=0,
        created_at=now - 10,
        deadline=now + 60,
        tensor=TensorInfo(kind="image", codec="raw", dtype="uint8", shape=shape, payload_bytes=0, crc32=0),
    )
    envelope = decode_envelope(encode_envelope(header, payload), 1 << 22)
    decisions, _ = runner.run([runner.prepare(envelope, now, 0)], NO_EXIT)
    assert decisions[0].kind == "forward" and decisions[0].message is not None
    forwarded = decode_envelope(decisions[0].message, 1 << 22)
    timestamps = {
        "deadline": now + deadline_in_s,
        "settle_by": None if settle_in_s is None else now + settle_in_s,
    }
    return encode_envelope(forwarded.header.model_copy(update=timestamps), forwarded.payload)


@pytest.fixture
def stage1():
    transport = AckingTransport()
    service = DeviceService(_settings(device={"stage_index": 1, "device_id": "d1"}), transport=transport)
    service.policy = NO_EXIT
    service.start()
    # A stage-2 device online, so stage 1 would forward
    info = DeviceInfo(
        device="d2",
        stage_index=2,
        num_stages=3,
        model_id="m",
        model_hash=service.runner.model_hash,
        codec="int8+zstd",
        started_at=1.0,
    )
    service.peers.update_info("d2", info)
    service.peers.update_status("d2", "online")
    yield service, transport
    service.stop()


def _deliver(service: DeviceService, payload: bytes, ack_id: tuple[int, int]) -> None:
    service._on_stage_input(Message(TOPICS.stage_input(1), payload, received_at=time.time(), ack_id=ack_id))


def test_a_forward_reports_progress_and_is_acknowledged_after_publishing(stage1) -> None:
    service, transport = stage1
    _deliver(service, _stage1_input(30, 40), (1, 11))
    _wait(lambda: transport.acks)
    assert transport.on(TOPICS.stage_input(2)), "forwarded to stage 2"
    progress = Progress.model_validate_json(transport.on(TOPICS.progress("cam"))[0])
    assert (progress.request_id, progress.stage_reached, progress.exit_stage) == ("q1", 2, 1)
    ack_id, published_before_ack = transport.acks[0]
    assert ack_id == (1, 11) and published_before_ack == len(transport.published)
    _deliver(service, _stage1_input(30, 40), (1, 12))  # the same request again: QoS 1 redelivery
    _wait(lambda: len(transport.acks) == 2)
    assert len(transport.on(TOPICS.stage_input(2))) == 1 and service.counters.duplicates == 1


def test_an_envelope_without_settle_by_is_forwarded_without_progress(stage1) -> None:
    service, transport = stage1
    _deliver(service, _stage1_input(30, None), (1, 13))
    _wait(lambda: transport.acks)
    assert transport.on(TOPICS.stage_input(2)) and not transport.on(TOPICS.progress("cam"))


def test_late_work_is_answered_at_once_with_the_best_prediction(stage1) -> None:
    service, transport = stage1
    _deliver(service, _stage1_input(-0.5, 30), (1, 14))
    _wait(lambda: transport.acks)
    result = Result.model_validate_json(transport.on(TOPICS.results("cam"))[0])
    assert result.outcome == "degraded" and result.exit_stage == 0
    assert result.reason == "deadline passed before stage 1 ran"
    assert not transport.on(TOPICS.stage_input(2))


def test_work_the_client_has_settled_is_dropped_and_counted(stage1) -> None:
    service, transport = stage1
    _deliver(service, _stage1_input(-5, -1), (1, 15))
    _wait(lambda: transport.acks)
    assert service.counters.expired == 1 and service.telemetry().expired == 1
    assert not transport.on(TOPICS.results("cam")) and not transport.on(TOPICS.stage_input(2))


def test_a_full_queue_rejects_and_acknowledges_after_the_answer() -> None:
    transport = AckingTransport()
    service = DeviceService(
        _settings(device={"stage_index": 1, "device_id": "d1", "queue_capacity": 1}), transport=transport
    )  # not started: nothing drains the queue
    payload = _stage1_input(30, 40)
    _deliver(service, payload, (1, 1))
    _deliver(service, payload, (1, 2))
    rejection = Result.model_validate_json(transport.on(TOPICS.results("cam"))[0])
    assert rejection.outcome == "rejected" and "queue full" in (rejection.reason or "")
    assert transport.acks == [((1, 2), len(transport.published))]


def test_telemetry_reports_what_answering_and_handing_on_cost_the_worker(stage1) -> None:
    service, transport = stage1
    assert service.telemetry().forward_cost_ms == 0 and service.telemetry().answer_cost_ms == 0
    _deliver(service, _stage1_input(30, 40), (1, 21))
    _wait(lambda: transport.acks)
    handed_on = service.telemetry()
    # Forwarding encodes features and publishes them: its cost is measured, apart from answers.
    assert handed_on.forward_cost_ms > 0 and handed_on.answer_cost_ms == 0
    assert handed_on.batch_per_request_ms >= service._compute_cost[1]  # + reading the input in
    service.policy = Policy(version=2, mode="static", thresholds=[0.0, 0.0])  # everything exits
    _deliver(service, _stage1_input(30, 40).replace(b"q1", b"q2"), (1, 22))
    _wait(lambda: len(transport.acks) == 2)
    assert service.counters.exited == 1 and service.telemetry().answer_cost_ms > 0
