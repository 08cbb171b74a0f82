"""`distree device`: one stage on one device, between the broker and a worker thread.

The MQTT network thread only parks messages in a bounded queue (or rejects them when it is
full); a worker thread validates, batches and runs the stage, and publishes what comes out.
A stage input is acknowledged to the broker only once its answer (result, forward, rejection)
is with the broker, and the session persists, so a device killed mid-batch and restarted
with the same id gets that work redelivered (docs/protocol.md, "Terminal outcomes").
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass

import torch
from pydantic import ValidationError

from distree_mqtt.device.peers import PeerDirectory
from distree_mqtt.device.runner import Decision, RejectedInput, StageRunner, Work, settled_by_client
from distree_mqtt.device.stats import DeviceCounters, RollingSamples
from distree_mqtt.model.criteria import get_criterion
from distree_mqtt.policy_defaults import default_policy
from distree_mqtt.protocol import DeviceInfo, ErrorReport, Policy, Result, Telemetry, stage_telemetry
from distree_mqtt.recent_ids import RecentIds
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import DistreeSettings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import LastWill, Message, MqttTransport, Transport
from distree_mqtt.wire import EnvelopeError, decode_envelope
from distree_mqtt.wire.envelope import IDENTIFIER, MAX_HEADER_BYTES, PREFIX

log = logging.getLogger(__name__)


@dataclass
class _Incoming:
    payload: bytes
    topic: str
    received_at: float
    ack_id: tuple[int, int] | None = None


def default_device_id(stage_index: int) -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-stage{stage_index}-{os.getpid()}"


_REQUEST_ID = re.compile(IDENTIFIER)


def peek_request(payload: bytes) -> tuple[str | None, str | None]:
    """(request_id, source) of a message we will not run, to answer it explicitly; None where
    they would not pass the header's own validation (then only the errors topic hears of it)."""
    try:
        _, _, length = PREFIX.unpack_from(payload)
        if length > MAX_HEADER_BYTES:
            return None, None
        raw = json.loads(payload[PREFIX.size : PREFIX.size + length])
        request_id, source = raw.get("request_id"), raw.get("source")
        if not (isinstance(request_id, str) and isinstance(source, str) and len(source) <= 128):
            return None, None
        if not _REQUEST_ID.match(request_id):
            return None, None
        source.encode("utf-8")  # strict: lone surrogates cannot be published
        return request_id, source
    except Exception:  # anything malformed just has no answer address
        return None, None


class DeviceService:
    # The worker loops at least every 0.1 s when idle; a batch taking longer than this is a hang.
    STALL_LIMIT_S = 30.0

    def __init__(self, settings: DistreeSettings, transport: Transport | None = None) -> None:
        self.settings = settings
        self._compute_cost = (0.0, 0.0)  # calibrated in start()
        options = settings.device
        self.topics = Topics(settings.topic_prefix, settings.pipeline)
        self.device_id = options.device_id or default_device_id(options.stage_index)
        torch.set_num_threads(options.threads)
        bundle = options.bundle or reference_bundle("mnist")
        self.runner = StageRunner(
            bundle, options.stage_index, options.codec, self.device_id, options.whole_model
        )
        self.num_stages = len(self.runner.manifest.stages)
        self.policy: Policy = default_policy(self.runner.manifest)
        self.peers = PeerDirectory(self.runner.model_hash)
        self.counters = DeviceCounters()
        self.recent = RecentIds()
        self.queue_delay = RollingSamples()
        self.compute_time = RollingSamples()
        self.batch_time = RollingSamples()
        self.service_time = RollingSamples()
        self.batch_size = RollingSamples()
        # Worker time per request beyond the stage: reading it in, and answering or handing on.
        self.input_cost = RollingSamples()
        self.answer_cost = RollingSamples()
        self.forward_cost = RollingSamples()
        self.work: queue.Queue[_Incoming] = queue.Queue(maxsize=options.queue_capacity)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._worker_heartbeat = time.monotonic()
        self._status_mark = (time.monotonic(), 0)
        self._stage_topic = (
            self.topics.stage_input_shared(options.stage_index, options.group)
            if options.shared_subscription
            else self.topics.stage_input(options.stage_index)
        )
        self.transport = transport or MqttTransport(
            settings.broker,
            client_id=self.device_id,
            will=LastWill(self.topics.status(self.device_id), "offline"),
            on_connected=self._on_connected,
            persistent_session=options.session_expiry_s > 0,
            session_expiry_s=options.session_expiry_s,
            deferred_ack=(self._stage_topic,),
            # Unacknowledged inputs are the queue plus the batch in the stage; headroom beyond
            # that reaches the device and is rejected at once when the queue is full, so an
            # overload becomes explicit answers rather than a backlog at the broker.
            receive_maximum=2 * options.queue_capacity + options.max_batch,
            # Up to twice the limit still arrives and gets a counted rejection; beyond that the
            # broker drops it before it costs this device memory.
            maximum_packet_bytes=2 * options.max_message_bytes + 65536,
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        options = self.settings.device
        self._compute_cost = self._calibrate_compute_cost()
        stage_topic = self._stage_topic
        self.transport.subscribe(self.topics.policy, self._on_policy)
        self.transport.subscribe(self.topics.all_status, self._on_status)
        self.transport.subscribe(self.topics.all_device_info, self._on_device_info)
        self.transport.subscribe(self.topics.all_telemetry, self._on_telemetry)
        self.transport.subscribe(stage_topic, self._on_stage_input)
        if isinstance(self.transport, MqttTransport):
            self.transport.start()
        else:
            self._on_connected(Message("", b""))
        for target, name in ((self._work_loop, "stage-worker"), (self._telemetry_loop, "telemetry")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "device %s serving stage %d of %s",
            self.device_id,
            options.stage_index,
            self.runner.manifest.model_id,
        )

    def stop(self) -> None:
        """Stop taking work, finish what is queued, answer anything left, say `stopped`."""
        self.transport.unsubscribe(self._stage_topic)
        time.sleep(0.1)  # deliveries already on their way still reach the queue
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        while True:  # only if the worker could not drain in time
            try:
                left = self.work.get_nowait()
            except queue.Empty:
                break
            self._reject(left.topic, left.payload, "device stopping", left.ack_id)
        self.transport.publish(self.topics.status(self.device_id), "stopped", retain=True)
        self.transport.publish(self.topics.device_info(self.device_id), b"", retain=True)
        if isinstance(self.transport, MqttTransport):
            time.sleep(0.2)  # let the last publishes leave before the socket closes
        self.transport.stop()

    # -- health, for the systemd watchdog and `systemctl status` -------------------------------
    def healthy(self) -> bool:
        """Every thread alive, the worker looping recently, the MQTT network loop running. A
        broker outage is not unhealthy: paho reconnects, and a restart would only reload the stage."""
        if not self._threads or not all(thread.is_alive() for thread in self._threads):
            return False
        if time.monotonic() - self._worker_heartbeat > self.STALL_LIMIT_S:
            return False
        return not isinstance(self.transport, MqttTransport) or self.transport.running

    def status_line(self) -> str:
        """E.g. `stage 1: 12.0 req/s, queue 3/64, policy v5`; the rate is since the last call."""
        now = time.monotonic()
        with self.counters.lock:
            processed = self.counters.processed
        since, processed_before = self._status_mark
        self._status_mark = (now, processed)
        rate = (processed - processed_before) / (now - since) if now > since else 0.0
        line = (
            f"stage {self.runner.stage_index}: {rate:.1f} req/s, "
            f"queue {self.work.qsize()}/{self.settings.device.queue_capacity}, policy v{self.policy.version}"
        )
        if isinstance(self.transport, MqttTransport) and not self.transport.connected:
            line += ", broker unreachable (reconnecting)"
        return line

    def _on_connected(self, _: Message) -> None:
        info = DeviceInfo(
            device=self.device_id,
            stage_index=self.runner.stage_index,
            num_stages=self.num_stages,
            model_id=self.runner.manifest.model_id,
            model_hash=self.runner.model_hash,
            codec=self.runner.codec_name,
            slowdown=self.settings.device.slowdown,
            started_at=time.time(),
        )
        self.transport.publish(self.topics.device_info(self.device_id), info.model_dump_json(), retain=True)
        self.transport.publish(self.topics.status(self.device_id), "online", retain=True)

    # -- network thread: keep short ----------------------------------------------------------
    def _on_stage_input(self, message: Message) -> None:
        self.counters.add(received=1, bytes_in=len(message.payload))
        if len(message.payload) > self.settings.device.max_message_bytes:
            self._reject(
                message.topic,
                message.payload,
                f"message over {self.settings.device.max_message_bytes} bytes",
                message.ack_id,
            )
            return
        try:
            self.work.put_nowait(
                _Incoming(message.payload, message.topic, message.received_at or time.time(), message.ack_id)
            )
        except queue.Full:
            self._reject(message.topic, message.payload, "overloaded: stage queue full", message.ack_id)

    def _on_policy(self, message: Message) -> None:
        try:
            policy = Policy.model_validate_json(message.payload)
        except ValidationError as error:
            self._report_error(message.topic, f"invalid policy: {error.errors()[0]['msg']}")
            return
        try:
            get_criterion(policy.criterion)
        except ValueError as error:
            self._report_error(message.topic, f"invalid policy: {error}")
            return
        # The broker orders messages on one topic, so the latest policy is the one to apply.
        self.policy = policy

    def _on_status(self, message: Message) -> None:
        status = message.payload.decode("utf-8", "replace")[:16]
        self.peers.update_status(self.topics.last_level(message.topic), status)

    def _on_device_info(self, message: Message) -> None:
        device = self.topics.last_level(message.topic)
        if not message.payload:
            self.peers.update_info(device, None)
            return
        try:
            self.peers.update_info(device, DeviceInfo.model_validate_json(message.payload))
        except ValidationError:
            self._report_error(message.topic, "invalid device descriptor")

    def _on_telemetry(self, message: Message) -> None:
        report = stage_telemetry(
            message.payload, lambda: self._report_error(message.topic, "invalid telemetry")
        )
        if report is not None:
            self.peers.update_telemetry(self.topics.last_level(message.topic), report)

    # -- worker thread -------------------------------------------------------------------------
    def _work_loop(self) -> None:
        options = self.settings.device
        while not (self._stop.is_set() and self.work.empty()):
            self._worker_heartbeat = time.monotonic()
            try:
                first = self.work.get(timeout=0.1)
            except queue.Empty:
                continue
            batch_messages = [first]
            fill_until = time.monotonic() + options.batch_wait_ms / 1000.0
            while len(batch_messages) < options.max_batch:
                timeout = fill_until - time.monotonic()
                try:
                    batch_messages.append(
                        self.work.get(timeout=timeout) if timeout > 0 else self.work.get_nowait()
                    )
                except queue.Empty:
                    break
            busy_since = time.perf_counter()
            unanswered = {id(incoming): incoming for incoming in batch_messages}
            try:
                self._run_batch(batch_messages, unanswered)
            except Exception as error:  # never lose the thread; answer what is still unanswered
                log.exception("stage run failed")
                for incoming in unanswered.values():
                    self._reject_safely(incoming, f"internal error: {type(error).__name__}")
            busy_ms = (time.perf_counter() - busy_since) * 1000.0
            for _ in batch_messages:
                self.service_time.add(busy_ms / len(batch_messages))

    def _reject_safely(self, incoming: _Incoming, reason: str) -> None:
        try:
            self._reject(incoming.topic, incoming.payload, reason, incoming.ack_id)
        except Exception:  # the rejection itself must never take the worker down
            log.exception("could not publish a rejection")

    def _run_batch(self, batch_messages: list[_Incoming], unanswered: dict[int, _Incoming]) -> None:
        """Answer every message exactly once; `unanswered` shrinks as each one is settled."""
        started = time.time()
        reading = time.perf_counter()
        accepted: list[tuple[Work, _Incoming]] = []
        for incoming in batch_messages:
            try:
                envelope = decode_envelope(incoming.payload, self.settings.device.max_message_bytes)
                work = self.runner.prepare(envelope, incoming.received_at, len(incoming.payload))
            except (EnvelopeError, RejectedInput) as error:
                unanswered.pop(id(incoming))
                self._reject_safely(incoming, str(error))
                continue
            header = envelope.header
            if not self.recent.add(f"{header.source}\x00{header.request_id}"):
                unanswered.pop(id(incoming))  # already answered once: QoS 1 redelivery
                self.counters.add(duplicates=1)
                self.transport.ack(incoming.ack_id)
                continue
            if settled_by_client(header, started):
                # Redelivered after a restart or a freeze: the client has settled it already
                # (from a progress message, or as lost), so an answer now would be its second.
                unanswered.pop(id(incoming))
                self.counters.add(expired=1)
                self.transport.ack(incoming.ack_id)
                continue
            if self._answer_late(header.deadline, header.best is not None, started):
                unanswered.pop(id(incoming))  # too late to run the stage: answer with what it has
                result = self.runner.late_answer(work, self.policy, started)
                self.counters.add(exited=1, degraded=int(result.degraded))
                self.publish_result(result, header.reply_to, incoming.ack_id)
                continue
            work.queue_ms = max(0.0, (started - incoming.received_at) * 1000.0)
            self.queue_delay.add(work.queue_ms)
            accepted.append((work, incoming))
        if not accepted:
            return
        reading_ms = (time.perf_counter() - reading) * 1000.0
        for _ in batch_messages:
            self.input_cost.add(reading_ms / len(batch_messages))
        next_stage = self.runner.stage_index + 1
        next_online = self.runner.is_final or bool(self.peers.online_devices(next_stage))
        remaining = None if self.runner.is_final else self.peers.remaining_ms(next_stage, self.num_stages)
        decisions, compute_ms = self.runner.run(
            [work for work, _ in accepted], self.policy, next_online, remaining, self.settings.device.slowdown
        )
        self.batch_time.add(compute_ms)
        self.batch_size.add(len(accepted))
        for _ in accepted:
            self.compute_time.add(compute_ms / len(accepted))
        for decision, (_, incoming) in zip(decisions, accepted, strict=True):
            unanswered.pop(id(incoming))
            publishing = time.perf_counter()
            try:
                self._publish_decision(decision, incoming.ack_id)
            except Exception as error:
                log.exception("could not publish a decision")
                self._reject_safely(incoming, f"internal error: {type(error).__name__}")
            cost = decision.cost_ms + (time.perf_counter() - publishing) * 1000.0
            (self.forward_cost if decision.kind == "forward" else self.answer_cost).add(cost)
        self.counters.add(processed=len(accepted))

    def _answer_late(self, deadline: float, has_prediction: bool, now: float) -> bool:
        """Past its deadline, a request is answered without running the stage when it carries a
        prediction (degraded), or, with none yet, when this device is overloaded (queue half
        full: a `timeout` sheds the late work). Otherwise the stage runs and exits at once."""
        if now < deadline or self.policy.mode == "no-exit":
            return False
        return has_prediction or self.work.qsize() >= self.settings.device.queue_capacity // 2

    def _publish_decision(self, decision: Decision, ack_id: tuple[int, int] | None = None) -> None:
        """Publish what the stage decided; the input is acknowledged once the broker has it."""
        header = decision.work.envelope.header
        if decision.kind == "forward":
            assert decision.message is not None
            if decision.progress is not None:
                self.transport.publish(
                    self.topics.progress(header.source), decision.progress.model_dump_json(exclude_none=True)
                )
            # The next stage may take it until the client settles the request (MQTT 5 expiry);
            # past the deadline it answers at once with the best prediction it carries.
            expiry = max(0.0, (header.settle_by or header.deadline) - time.time())
            self.transport.publish_then(
                self.topics.stage_input(self.runner.stage_index + 1),
                decision.message,
                lambda: self.transport.ack(ack_id),
                expiry_s=expiry,
            )
            self.counters.add(forwarded=1, bytes_out=len(decision.message))
            return
        assert decision.result is not None
        self.publish_result(decision.result, header.reply_to, ack_id)
        self.counters.add(exited=1, degraded=int(decision.result.degraded))

    def publish_result(
        self, result: Result, reply_to: str | None = None, ack_id: tuple[int, int] | None = None
    ) -> None:
        """Publish a result; the stage input it answers (`ack_id`) is acknowledged once the
        broker has the result."""
        payload = result.model_dump_json(exclude_none=True)
        self.transport.publish_then(
            self.topics.results(result.source), payload, lambda: self.transport.ack(ack_id)
        )
        if reply_to:
            # Only inside this pipeline's reply namespace: a request must not steer results
            # onto control or stage topics.
            if reply_to.startswith(f"{self.topics.root}/reply/") and not any(c in reply_to for c in "+#\x00"):
                self.transport.publish(reply_to, payload)
            else:
                self._report_error(
                    self.topics.stage_input(self.runner.stage_index), "reply_to outside the reply namespace"
                )

    # -- rejections and telemetry ----------------------------------------------------------
    def _reject(self, topic: str, payload: bytes, reason: str, ack_id: tuple[int, int] | None = None) -> None:
        self.counters.add(rejected=1)
        request_id, source = peek_request(payload)
        self._report_error(topic, reason, request_id, source)
        if request_id is None or source is None:
            self.transport.ack(ack_id)  # nobody to answer: the errors topic has it
            return
        rejection = Result(
            request_id=request_id,
            source=source,
            outcome="rejected",
            reason=reason,
            completed_at=time.time(),
        )
        self.transport.publish_then(
            self.topics.results(source),
            rejection.model_dump_json(exclude_none=True),
            lambda: self.transport.ack(ack_id),
        )

    def _report_error(
        self, topic: str, reason: str, request_id: str | None = None, source: str | None = None
    ) -> None:
        self.counters.add(errors=1)
        report = ErrorReport(
            component=self.device_id,
            topic=topic,
            reason=reason[:300],
            request_id=request_id,
            source=source,
            timestamp=time.time(),
        )
        self.transport.publish(self.topics.errors, report.model_dump_json(exclude_none=True), qos=0)

    def telemetry(self) -> Telemetry:
        counters = self.counters
        with counters.lock:
            snapshot = {
                name: getattr(counters, name)
                for name in (
                    "received",
                    "processed",
                    "exited",
                    "forwarded",
                    "degraded",
                    "rejected",
                    "expired",
                    "errors",
                    "bytes_in",
                    "bytes_out",
                )
            }
        return Telemetry(
            device=self.device_id,
            stage_index=self.runner.stage_index,
            timestamp=time.time(),
            interval_s=self.settings.device.telemetry_interval_s,
            queue_length=self.work.qsize(),
            queue_capacity=self.settings.device.queue_capacity,
            queue_delay_p50_ms=round(self.queue_delay.percentile(50), 3),
            queue_delay_p95_ms=round(self.queue_delay.percentile(95), 3),
            compute_p50_ms=round(self.compute_time.percentile(50), 3),
            compute_p95_ms=round(self.compute_time.percentile(95), 3),
            batch_compute_p50_ms=round(self.batch_time.percentile(50), 3),
            service_p50_ms=round(self.service_time.percentile(50), 3),
            batch_size_mean=round(self.batch_size.mean(), 3),
            **self._batch_cost(),
            policy_version=self.policy.version,
            **snapshot,
        )

    def _batch_cost(self) -> dict[str, float | int]:
        """c(b) = fixed + per_request x b: the stage's calibrated compute (times the slowdown),
        plus the time to read each request in; what answering or handing on costs is reported
        apart, as the share of each depends on the thresholds. Means, not medians: capacity is
        set by the mean, and forwarding (encoding features) is often the rarer, dearer path."""
        fixed, per_request = self._compute_cost
        return {
            "batch_fixed_ms": round(fixed, 3),
            "batch_per_request_ms": round(per_request + self.input_cost.mean(), 3),
            "answer_cost_ms": round(self.answer_cost.mean(), 3),
            "forward_cost_ms": round(self.forward_cost.mean(), 3),
            "max_batch": self.settings.device.max_batch,
        }

    def _calibrate_compute_cost(self) -> tuple[float, float]:
        """Quiet stage time at batch 1 and at the largest batch, as a line (ms)."""
        options = self.settings.device
        single = self.runner.quiet_stage_ms(1)
        largest = self.runner.quiet_stage_ms(options.max_batch) if options.max_batch > 1 else single
        per_request = max(0.0, (largest - single) / max(1, options.max_batch - 1))
        fixed = max(0.0, single - per_request)
        return fixed * options.slowdown, per_request * options.slowdown

    def _telemetry_loop(self) -> None:
        interval = self.settings.device.telemetry_interval_s
        while True:
            self.transport.publish(
                self.topics.telemetry(self.device_id), self.telemetry().model_dump_json(), qos=0
            )
            if self._stop.wait(interval):
                return
