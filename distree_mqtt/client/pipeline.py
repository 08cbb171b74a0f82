"""The Python client: `Pipeline(broker_url, pipeline).infer(image, deadline_ms=...)`.

Every request ends with exactly one outcome: a `Result` (full or early exit, possibly
degraded), or a `RequestRejected` / `RequestTimeout` error. Results are matched by request id;
a second answer for the same id is counted and ignored.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from distree_mqtt.bundle import Manifest, load_manifest
from distree_mqtt.protocol import Result
from distree_mqtt.recent_ids import RecentIds
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import DistreeSettings, load_settings
from distree_mqtt.topics import Topics, escape_level
from distree_mqtt.transport import Message, MqttTransport, Transport
from distree_mqtt.wire import EnvelopeHeader, TensorInfo, encode_envelope
from distree_mqtt.wire.images import encode_image, image_codec_of, image_dimensions


class RequestTimeout(TimeoutError):
    def __init__(self, request_id: str, waited_ms: float) -> None:
        super().__init__(f"request {request_id} got no answer within {waited_ms:.0f} ms")
        self.request_id = request_id


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
        self._pending: dict[str, Future[Result]] = {}
        self._deadlines = DeadlineQueue(self._expire)
        self._answered = RecentIds()
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.duplicates = 0
        self.invalid_results = 0  # payloads on our results topic that are not a Result
        self.transport = transport or MqttTransport(
            self.settings.broker, client_id=f"{self.source}-{uuid.uuid4().hex[:8]}"
        )
        self.transport.subscribe(self.topics.results(self.source), self._on_result)
        if isinstance(self.transport, MqttTransport):
            self.transport.start()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            pending = list(self._pending.items())
            self._pending.clear()
        self._deadlines.stop()
        for request_id, future in pending:
            if not future.done():
                future.set_exception(RequestTimeout(request_id, 0))
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
            reply_to=reply_to,
            tensor=TensorInfo(
                kind="image", codec=codec, dtype="uint8", shape=shape, payload_bytes=0, crc32=0
            ),
        )
        future: Future[Result] = Future()
        waited = deadline_ms + self.settings.client.grace_ms
        with self._lock:
            self._pending[request_id] = future
        self._deadlines.add(time.monotonic() + waited / 1000.0, request_id, waited)
        self.transport.publish(
            self.topics.stage_input(0), encode_envelope(header, payload), expiry_s=deadline_ms / 1000.0
        )
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
            if entry is None:
                if not self._answered.add(result.request_id):
                    self.duplicates += 1
                return
            self._answered.add(result.request_id)
        future = entry
        if result.outcome == "rejected":
            future.set_exception(RequestRejected(result))
        else:
            future.set_result(result)

    def _expire(self, request_id: str, waited_ms: float) -> None:
        with self._lock:
            entry = self._pending.pop(request_id, None)
            if entry is not None:
                self._answered.add(request_id)
        if entry is not None:
            entry.set_exception(RequestTimeout(request_id, waited_ms))
