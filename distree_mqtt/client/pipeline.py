"""The Python client: `Pipeline(broker_url, pipeline).infer(image, deadline_ms=...)`.

Every request ends with exactly one outcome: a `Result` (full or early exit, possibly
degraded), or a `RequestRejected` / `RequestTimeout` error. Results are matched by request id;
a second answer for the same id is counted and ignored. `Pipeline.ledger` counts them all.

At deadline + grace without an answer, the best prediction a device reported on the
progress topic when it forwarded the request becomes the answer (degraded: a later stage did
not answer); without one the request is lost (RequestTimeout). The request carries that
moment as `settle_by`, so devices drop it afterwards instead of answering a second time.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from distree_mqtt.bundle import Manifest, load_manifest
from distree_mqtt.client.ledger import Ledger
from distree_mqtt.protocol import Progress, Result
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import DistreeSettings, load_settings
from distree_mqtt.topics import Topics, escape_level
from distree_mqtt.transport import Message, MqttTransport, Transport
from distree_mqtt.wire import EnvelopeHeader, TensorInfo, encode_envelope
from distree_mqtt.wire.images import encode_image, image_codec_of, image_dimensions


class RequestTimeout(TimeoutError):
    def __init__(self, request_id: str, waited_ms: float, result: Result | None = None) -> None:
        if result is None:
            super().__init__(f"request {request_id} got no answer within {waited_ms:.0f} ms")
        else:
            super().__init__(f"request {request_id} timed out in the pipeline: {result.reason}")
        self.request_id = request_id
        self.result = result  # the pipeline's `timeout` outcome, None when nothing came back


@dataclass
class _PendingRequest:
    future: Future[Result]
    created_at: float
    settle_by: float
    envelope: bytes  # kept to send again after a reconnect (see _resend_unseen)
    progress: Progress | None = None  # the latest best-so-far a forwarding device reported


class RequestRejected(RuntimeError):
    def __init__(self, result: Result) -> None:
        super().__init__(f"request {result.request_id} was rejected: {result.reason}")
        self.result = result


class DeadlineQueue:
    """One thread that expires requests in deadline order (not one timer thread per request).
    An entry whose request was answered meanwhile expires into nothing."""

    def __init__(self, expire: Callable[[str, float], None]) -> None:
        self._expire = expire
        self._heap: list[tuple[float, str, float]] = []
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
        self._thread.start()

    def add(self, due_monotonic: float, request_id: str, waited_ms: float) -> None:
        with self._condition:
            heapq.heappush(self._heap, (due_monotonic, request_id, waited_ms))
            self._condition.notify()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._condition.wait(timeout)
                if self._stopped:
                    return
                _, request_id, waited_ms = heapq.heappop(self._heap)
            self._expire(request_id, waited_ms)


class Pipeline:
    """A client of one pipeline. Use as a context manager, or call close()."""

    # After a reconnect, requests no device has reported on are sent again this many seconds
    # later: Mosquitto does not keep shared subscriptions across its restart, so stage-0 inputs
    # published before the devices re-subscribed reached nobody. Devices drop a request id they
    # have already handled, so a copy that did arrive is not run twice.
    RESEND_AFTER_RECONNECT_S = (1.0, 3.0)

    def __init__(
        self,
        broker_url: str | None = None,
        pipeline: str | None = None,
        bundle: Path | None = None,
        settings: DistreeSettings | None = None,
        transport: Transport | None = None,
    ) -> None:
        overrides: dict = {"broker": {"url": broker_url}, "pipeline": pipeline}
        self.settings = settings or load_settings(**overrides)
        self.topics = Topics(self.settings.topic_prefix, self.settings.pipeline)
        self.manifest: Manifest = load_manifest(bundle or reference_bundle("mnist"))
        self.source = self.settings.client.source
        self._pending: dict[str, _PendingRequest] = {}
        self._deadlines = DeadlineQueue(self._expire)
        self.ledger = Ledger()
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.invalid_results = 0  # payloads on our results topic that are not a Result
        # A persistent session: results published while the broker restarts or this client
        # reconnects are kept for it and delivered on its return.
        self.transport = transport or MqttTransport(
            self.settings.broker,
            client_id=f"{escape_level(self.source)[:40]}-{uuid.uuid4().hex[:8]}",
            persistent_session=self.settings.client.session_expiry_s > 0,
            session_expiry_s=self.settings.client.session_expiry_s,
            on_connected=self._on_connected,
        )
        self._connections = 0
        self.resent = 0
        self.transport.subscribe(self.topics.results(self.source), self._on_result)
        self.transport.subscribe(self.topics.progress(self.source), self._on_progress)
        if isinstance(self.transport, MqttTransport):
            self.transport.start()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_connected(self, _: Message) -> None:
        self._connections += 1
        if self._connections == 1:
            return
        for delay_s in self.RESEND_AFTER_RECONNECT_S:
            timer = threading.Timer(delay_s, self._resend_unseen)
            timer.daemon = True
            timer.start()

    def _resend_unseen(self) -> None:
        now = time.time()
        with self._lock:
            unseen = [entry for entry in self._pending.values() if entry.progress is None]
        for entry in unseen:
            if entry.settle_by - now > 0.5:
                self.resent += 1
                self.transport.publish(
                    self.topics.stage_input(0), entry.envelope, expiry_s=entry.settle_by - now
                )

    @property
    def duplicates(self) -> int:
        """Outcomes after a request's first (QoS 1 redeliveries, late answers)."""
        return self.ledger.duplicates

    def close(self) -> None:
        with self._lock:
            pending = list(self._pending.items())
            self._pending.clear()
        self._deadlines.stop()
        for request_id, entry in pending:
            if not entry.future.done():
                entry.future.set_exception(RequestTimeout(request_id, 0))
        self.transport.stop()

    # -- requests --------------------------------------------------------------------------
    def reply_topic(self, name: str) -> str:
        """A topic in this pipeline's reply namespace, where devices may also publish results."""
        return f"{self.topics.root}/reply/{escape_level(name)}"

    def submit(
        self,
        image: np.ndarray | bytes | str | Path,
        deadline_ms: float | None = None,
        request_id: str | None = None,
        reply_to: str | None = None,
    ) -> Future[Result]:
        """Send one image; the future resolves to a Result or raises RequestRejected/RequestTimeout."""
        deadline_ms = deadline_ms or self.settings.client.deadline_ms
        request_id = request_id or f"{uuid.uuid4().hex[:16]}-{next(self._counter)}"
        payload, codec, shape = self._encode(image)
        now = time.time()
        header = EnvelopeHeader(
            request_id=request_id,
            source=self.source,
            model_hash=self.manifest.content_hash,
            stage_index=0,
            created_at=now,
            deadline=now + deadline_ms / 1000.0,
            settle_by=now + (deadline_ms + self.settings.client.grace_ms) / 1000.0,
            reply_to=reply_to,
            tensor=TensorInfo(
                kind="image", codec=codec, dtype="uint8", shape=shape, payload_bytes=0, crc32=0
            ),
        )
        future: Future[Result] = Future()
        waited = deadline_ms + self.settings.client.grace_ms
        envelope = encode_envelope(header, payload)
        with self._lock:
            self._pending[request_id] = _PendingRequest(future, now, now + waited / 1000.0, envelope)
        self.ledger.sent(request_id, now)
        self._deadlines.add(time.monotonic() + waited / 1000.0, request_id, waited)
        # Stage 0 may still answer (degraded, or timeout when overloaded) until settle_by.
        self.transport.publish(self.topics.stage_input(0), envelope, expiry_s=waited / 1000.0)
        return future

    def infer(self, image: np.ndarray | bytes | str | Path, deadline_ms: float | None = None) -> Result:
        return self.submit(image, deadline_ms).result()

    def _encode(self, image: np.ndarray | bytes | str | Path) -> tuple[bytes, str, list[int]]:
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        if isinstance(image, bytes):
            codec = image_codec_of(image)
            if codec is None:
                raise ValueError("image bytes are neither PNG nor JPEG")
            width, height = image_dimensions(image, codec)
            return image, codec, [height, width]
        codec = self.settings.client.image_codec
        payload, shape = encode_image(image, codec)
        return payload, codec, shape

    # -- outcomes --------------------------------------------------------------------------
    def _on_result(self, message: Message) -> None:
        try:
            result = Result.model_validate_json(message.payload)
        except ValidationError:
            self.invalid_results += 1
            return
        with self._lock:
            entry = self._pending.pop(result.request_id, None)
        fingerprint = hashlib.blake2b(message.payload, digest_size=16).hexdigest()
        self.ledger.settle(result.request_id, result.outcome, time.time(), result.latency_ms, fingerprint)
        if entry is None:
            return  # a second outcome (counted by the ledger) or another client's request
        if result.outcome == "rejected":
            entry.future.set_exception(RequestRejected(result))
        elif result.outcome == "timeout":
            entry.future.set_exception(RequestTimeout(result.request_id, result.latency_ms or 0.0, result))
        else:
            entry.future.set_result(result)

    def _on_progress(self, message: Message) -> None:
        try:
            progress = Progress.model_validate_json(message.payload)
        except ValidationError:
            self.invalid_results += 1
            return
        with self._lock:
            entry = self._pending.get(progress.request_id)
            if entry is not None and (
                entry.progress is None or progress.stage_reached > entry.progress.stage_reached
            ):
                entry.progress = progress

    def _expire(self, request_id: str, waited_ms: float) -> None:
        with self._lock:
            entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        now = time.time()
        progress = entry.progress
        if progress is None:
            self.ledger.lose(request_id, now)
            entry.future.set_exception(RequestTimeout(request_id, waited_ms))
            return
        # The pipeline's own prediction from the last stage that answered, not an invented one.
        result = Result(
            request_id=request_id,
            source=self.source,
            outcome="degraded",
            label=progress.label,
            class_name=self._class_name(progress.label),
            confidence=progress.confidence,
            exit_stage=progress.exit_stage,
            degraded=True,
            reason=f"stage {progress.stage_reached} did not answer",
            latency_ms=round((now - entry.created_at) * 1000.0, 3),
            policy_version=progress.policy_version,
            model_id=progress.model_id,
            completed_at=now,
        )
        self.ledger.settle(request_id, "degraded", now, result.latency_ms)
        entry.future.set_result(result)

    def _class_name(self, label: int) -> str | None:
        names = self.manifest.input.class_names
        return names[label] if 0 <= label < len(names) else None
