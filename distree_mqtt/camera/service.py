"""`distree camera`: frames from one camera through a motion gate into the pipeline, answers
back into retained state, events, per-class ON/OFF and snapshots.

Two threads beside MQTT's: the capture thread reads, gates and sends (never waiting for the
network: at `max_in_flight` unanswered requests a triggered frame is dropped and counted); the
results thread turns answers into MQTT messages, ends detections on time and publishes
telemetry. One process serves one camera (run one systemd instance per camera).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from distree_mqtt.bundle import load_manifest
from distree_mqtt.camera.messages import CameraState, CameraTelemetry
from distree_mqtt.camera.motion import Box, MotionGate, TriggerKind, TriggerPolicy, make_detector
from distree_mqtt.camera.preprocess import crop_box, encode_input, prepare_input
from distree_mqtt.camera.snapshot import annotate, encode_jpeg
from distree_mqtt.camera.sources import (
    Backoff,
    CameraSource,
    EndOfSource,
    FrameRateLimiter,
    SourceError,
    open_source,
)
from distree_mqtt.camera.tracker import DetectionTracker, Observation, TrackerUpdate
from distree_mqtt.client import Pipeline, RequestRejected, RequestTimeout
from distree_mqtt.device.stats import RollingSamples
from distree_mqtt.homeassistant.entities import camera_discovery
from distree_mqtt.homeassistant.publisher import DiscoveryPublisher
from distree_mqtt.protocol import Result
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import DistreeSettings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import LastWill, Message, MqttTransport, Transport

log = logging.getLogger(__name__)

_FIRST_FRAME_ATTEMPTS = 20


@dataclass
class CameraCounters:
    frames_read: int = 0
    frames_gated: int = 0
    motion_frames: int = 0
    keyframes: int = 0
    cooldown_frames: int = 0
    requests_sent: int = 0
    results: int = 0
    degraded: int = 0
    timeouts: int = 0
    rejected: int = 0
    skipped: int = 0
    reconnects: int = 0
    read_failures: int = 0
    errors: int = 0
    events: int = 0
    snapshots: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {name: value for name, value in vars(self).items() if isinstance(value, int)}


@dataclass
class _Sent:
    """A frame whose request is in flight: what its snapshot needs."""

    frame: np.ndarray
    cut: Box
    trigger: TriggerKind
    frame_index: int
    sent_monotonic: float


class CameraService:
    def __init__(
        self,
        settings: DistreeSettings,
        source: CameraSource | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self.options = options = settings.camera
        self.camera_id = options.camera_id
        self.topics = Topics(settings.topic_prefix, settings.pipeline)
        self.bundle = options.bundle or reference_bundle("mnist")
        self.manifest = load_manifest(self.bundle)
        self.spec = self.manifest.input
        known = self.spec.class_names
        classes = options.classes if options.classes is not None else known
        for name in [*classes, *options.class_min_confidence]:
            if name not in known:
                raise ValueError(f"camera class {name!r} is not a class of the bundle ({', '.join(known)})")
        self.classes = list(classes)
        self.source = source or open_source(options.source, options.loop, options.open_timeout_s)
        self.counters = CameraCounters()
        self.latency = RollingSamples()
        self.tracker = DetectionTracker(
            self.camera_id,
            self.classes,
            options.confidence_for,
            options.min_hits,
            options.hit_window_s,
            options.end_after_s,
        )
        self.gate: MotionGate | None = None
        self.pipeline: Pipeline | None = None
        self._slots = threading.Semaphore(options.max_in_flight)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._answers: queue.Queue[tuple[_Sent, Future[Result]]] = queue.Queue()
        self._stop = threading.Event()
        self.finished = threading.Event()  # a finite source ended (or the capture thread gave up)
        self._threads: list[threading.Thread] = []
        self._first_frame: np.ndarray | None = None
        self.last_frame_monotonic = time.monotonic()
        self._rates_mark: tuple[float, dict[str, int]] = (time.monotonic(), self.counters.snapshot())
        self._status_mark: tuple[float, dict[str, int]] = self._rates_mark
        client = settings.client.model_copy(
            update={"source": self.camera_id, "deadline_ms": options.deadline_ms}
        )
        self._client_settings = settings.model_copy(update={"client": client})
        self.transport = transport or MqttTransport(
            settings.broker,
            client_id=f"distree-{settings.pipeline}-camera-{self.camera_id}",
            will=LastWill(self.topics.status(self.camera_id), "offline"),
            on_connected=self._on_connected,
        )
        home_assistant = settings.homeassistant
        self.discovery: DiscoveryPublisher | None = None
        if home_assistant.enabled:
            self.discovery = DiscoveryPublisher(
                self.transport, home_assistant.discovery_prefix, home_assistant.legacy_discovery
            )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the source and check the ROI against its first frame (SourceError / ValueError in
        one line when either is wrong), then connect and start the threads."""
        self.source.open()
        first = None
        for _ in range(_FIRST_FRAME_ATTEMPTS):
            try:
                first = self.source.read()
            except EndOfSource:
                break
            if first is not None:
                break
        if first is None:
            self.source.close()
            raise SourceError(f"no frame could be read from {self.source.description}")
        self._first_frame = first
        self.gate = self._new_gate(first)
        if self.discovery is not None:
            self.discovery.start()  # listens for Home Assistant's birth: before connecting
        self.pipeline = Pipeline(settings=self._client_settings, bundle=self.bundle, transport=self.transport)
        self._announce()
        if not isinstance(self.transport, MqttTransport):
            self._on_connected(Message("", b""))
        for target, name in ((self._capture_loop, "camera-capture"), (self._results_loop, "camera-results")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("camera %s watching %s", self.camera_id, self.source.description)

    def stop(self) -> None:
        """Stop reading, wait briefly for answers in flight, end detections, say `stopped`."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self.pipeline is not None:
            self._drain_answers(time.monotonic() + min(2.0, self.options.deadline_ms / 1000.0 + 0.5))
            self._apply(self.tracker.end_all(), None, None)
            self.transport.publish(self.topics.status(self.camera_id), "stopped", retain=True)
            if isinstance(self.transport, MqttTransport):
                time.sleep(0.2)  # let the last publishes leave before the socket closes
            self.pipeline.close()
            self.pipeline = None
        self.source.close()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a finite source has ended; True when it has."""
        return self.finished.wait(timeout_s)

    def _on_connected(self, _: Message) -> None:
        self.transport.publish(self.topics.status(self.camera_id), "online", retain=True)

    def _announce(self) -> None:
        """Home Assistant discovery of this camera: events, snapshot, last detection, ON/OFF per class."""
        if self.discovery is None:
            return
        home_assistant = self.settings.homeassistant
        self.discovery.publish(
            camera_discovery(
                self.topics,
                self.camera_id,
                self.classes,
                off_delay_s=home_assistant.off_delay_s,
                node_id=home_assistant.node_id,
                origin=home_assistant.origin(),
            )
        )

    def _new_gate(self, frame: np.ndarray) -> MotionGate:
        options = self.options
        frame_rate = options.fps
        history = max(2, round(options.mog2_history_s * frame_rate))
        return MotionGate(
            make_detector(options.motion_method, options.motion_threshold, history),
            frame_width=frame.shape[1],
            frame_height=frame.shape[0],
            roi=options.roi,
            mask=options.mask,
            min_area_fraction=options.min_area_fraction,
            process_width=options.process_width,
        )

    # -- health, for the systemd watchdog and `systemctl status` -------------------------------
    def healthy(self) -> bool:
        """Threads alive and a frame read within `stall_timeout_s` (a finite source that ended is
        not unhealthy: the command is about to exit)."""
        if self.finished.is_set():
            return True
        if not self._threads or not all(thread.is_alive() for thread in self._threads):
            return False
        return time.monotonic() - self.last_frame_monotonic <= self.options.stall_timeout_s

    def status_line(self) -> str:
        now = time.monotonic()
        counts = self.counters.snapshot()
        since, before = self._status_mark
        self._status_mark = (now, counts)
        elapsed = max(now - since, 1e-6)
        line = (
            f"camera {self.camera_id}: {(counts['frames_read'] - before['frames_read']) / elapsed:.1f} fps, "
            f"{(counts['requests_sent'] - before['requests_sent']) / elapsed:.1f} req/s, "
            f"skipped {(counts['skipped'] - before['skipped']) / elapsed:.1f}/s"
        )
        if self.tracker.active:
            line += f", detected {', '.join(sorted(self.tracker.active))}"
        if isinstance(self.transport, MqttTransport) and not self.transport.connected:
            line += ", broker unreachable (reconnecting)"
        return line

    # -- capture thread ------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        try:
            self._capture()
        except Exception:  # a bug must not leave a silent zombie: the watchdog sees `finished`
            log.exception("camera capture failed")
            self.counters.add(errors=1)
        finally:
            self.finished.set()

    def _capture(self) -> None:
        options = self.options
        limiter = FrameRateLimiter(options.fps)
        # Finite sources are played at their own rate (real time) or as the limiter allows.
        pace_fps = (self.source.native_fps or options.fps) if options.realtime else options.fps
        pacer = None if self.source.live else FrameRateLimiter(pace_fps)
        backoff = Backoff(options.reconnect_initial_s, options.reconnect_max_s)
        trigger = TriggerPolicy(options.cooldown_s, options.keyframe_interval_s)
        frame, self._first_frame = self._first_frame, None
        frame_index = -1
        while not self._stop.is_set():
            if pacer is not None:
                if self._stop.wait(pacer.wait_s(time.monotonic())):
                    return
                pacer.admit(time.monotonic())
            if frame is None:
                try:
                    frame = self.source.read()
                except EndOfSource:
                    log.info("camera %s: %s ended", self.camera_id, self.source.description)
                    return
                except Exception as error:  # OpenCV can raise on a broken stream
                    log.warning("camera %s: read failed: %s", self.camera_id, error)
                    frame = None
                if frame is None:
                    self.counters.add(read_failures=1)
                    self._reconnect(backoff)
                    continue
            backoff.reset()
            frame_index += 1
            self.last_frame_monotonic = now = time.monotonic()
            self.counters.add(frames_read=1)
            current, frame = frame, None
            if limiter.admit(now):
                self._gate_and_send(current, frame_index, now, trigger)

    def _reconnect(self, backoff: Backoff) -> None:
        while not self._stop.is_set():
            delay = backoff.next_delay_s()
            log.warning(
                "camera %s: no frame from %s; reconnecting in %.1f s",
                self.camera_id,
                self.source.description,
                delay,
            )
            if self._stop.wait(delay):
                return
            try:
                self.source.open()
            except (SourceError, OSError) as error:
                log.warning("camera %s: %s", self.camera_id, error)
                continue
            self.counters.add(reconnects=1)
            if self.gate is not None:
                self.gate.reset()  # the scene may have changed while we were away
            return

    def _gate_and_send(self, frame: np.ndarray, frame_index: int, now: float, trigger: TriggerPolicy) -> None:
        assert self.gate is not None and self.pipeline is not None
        try:
            if (frame.shape[1], frame.shape[0]) != self.gate.frame_size:
                self.gate = self._new_gate(frame)  # the stream changed resolution on reconnect
            reading = self.gate.observe(frame)
        except ValueError as error:
            self.counters.add(errors=1)
            log.warning("camera %s: frame %d skipped: %s", self.camera_id, frame_index, error)
            return
        self.counters.add(frames_gated=1, motion_frames=int(reading.moving))
        kind = trigger.decide(now, reading.moving)
        if reading.moving and kind != "motion":
            self.counters.add(cooldown_frames=1)
        if kind is None:
            return
        if kind == "keyframe":
            self.counters.add(keyframes=1)
        if not self._slots.acquire(blocking=False):
            self.counters.add(skipped=1)  # the pipeline is behind: drop, never queue
            return
        try:
            motion_box = reading.box if kind == "motion" and self.options.crop == "motion" else None
            cut = crop_box(motion_box, self.gate.roi, self.options.crop_margin)
            payload = encode_input(
                prepare_input(frame, cut, self.spec, self.options.invert), self.options.image_codec
            )
            sent = _Sent(frame, cut, kind, frame_index, time.monotonic())
            request_id = f"{frame_index}-{uuid.uuid4().hex[:12]}"
            future = self.pipeline.submit(
                payload, deadline_ms=self.options.deadline_ms, request_id=request_id
            )
        except Exception as error:
            self._slots.release()
            self.counters.add(errors=1)
            log.warning("camera %s: could not send frame %d: %s", self.camera_id, frame_index, error)
            return
        with self._in_flight_lock:
            self._in_flight += 1
        self.counters.add(requests_sent=1)
        future.add_done_callback(partial(self._answered, sent))

    def _answered(self, sent: _Sent, future: Future[Result]) -> None:
        """On whichever thread settled the future: free the slot, hand over, return."""
        with self._in_flight_lock:
            self._in_flight -= 1
        self._slots.release()
        self._answers.put((sent, future))

    # -- results thread ------------------------------------------------------------------------
    def _results_loop(self) -> None:
        next_telemetry = time.monotonic()
        while not self._stop.is_set():
            try:
                sent, future = self._answers.get(timeout=0.1)
            except queue.Empty:
                pass
            else:
                self._handle_answer(sent, future)
            self._safely(lambda: self._apply(self.tracker.tick(time.time()), None, None))
            if time.monotonic() >= next_telemetry:
                next_telemetry = time.monotonic() + self.options.telemetry_interval_s
                self._safely(self._publish_telemetry)

    def _drain_answers(self, until_monotonic: float) -> None:
        while True:
            with self._in_flight_lock:
                waiting = self._in_flight
            try:
                sent, future = self._answers.get(timeout=0.05)
            except queue.Empty:
                if waiting == 0 or time.monotonic() >= until_monotonic:
                    break
                continue
            self._handle_answer(sent, future)
        self._safely(self._publish_telemetry)

    def _safely(self, action: Any) -> None:
        try:
            action()
        except Exception:  # one bad message must not stop the results thread
            log.exception("camera %s: publishing failed", self.camera_id)
            self.counters.add(errors=1)

    def _handle_answer(self, sent: _Sent, future: Future[Result]) -> None:
        try:
            result = future.result()
        except RequestTimeout:
            self.counters.add(timeouts=1)
            return
        except RequestRejected as error:
            self.counters.add(rejected=1)
            log.debug("camera %s: %s", self.camera_id, error)
            return
        except Exception:
            self.counters.add(errors=1)
            return
        self.counters.add(results=1, degraded=int(result.degraded))
        self._safely(lambda: self._publish_result(sent, result))

    def _publish_result(self, sent: _Sent, result: Result) -> None:
        latency_ms = (time.monotonic() - sent.sent_monotonic) * 1000.0
        self.latency.add(latency_ms)
        at = result.completed_at or time.time()
        class_name = result.class_name
        if class_name is None and result.label is not None and 0 <= result.label < len(self.spec.class_names):
            class_name = self.spec.class_names[result.label]
        state = CameraState(
            label=result.label,
            class_name=class_name,
            confidence=result.confidence,
            exit_stage=result.exit_stage,
            request_id=result.request_id,
            at=at,
            degraded=result.degraded,
            trigger=sent.trigger,
            latency_ms=round(latency_ms, 3),
            box=sent.cut.as_list(),
        )
        self.transport.publish(self.topics.camera_state(self.camera_id), state.model_dump_json(), retain=True)
        update = self.tracker.observe(
            Observation(
                request_id=result.request_id,
                label=result.label,
                class_name=class_name,
                confidence=result.confidence,
                exit_stage=result.exit_stage,
                degraded=result.degraded,
                at=at,
            )
        )
        mode = self.options.snapshot
        if mode == "results" or (mode == "detections" and update.snapshot_worthy):
            caption = f"{class_name if class_name is not None else '?'} {result.confidence or 0.0:.0%}"
            if result.degraded:
                caption += " (degraded)"
            image = annotate(
                sent.frame, sent.cut, self.gate.roi if self.gate else None, caption, at, result.degraded
            )
            jpeg = encode_jpeg(image, self.options.snapshot_quality, self.options.snapshot_max_width)
            # Before the events, so an automation woken by `new` fetches the matching picture.
            self.transport.publish(self.topics.camera_snapshot(self.camera_id), jpeg, retain=True)
            self.counters.add(snapshots=1)
        self._apply(update, sent, result)

    def _apply(self, update: TrackerUpdate, sent: _Sent | None, result: Result | None) -> None:
        for name, on in update.detected.items():
            self.transport.publish(
                self.topics.camera_detected(self.camera_id, name), "ON" if on else "OFF", retain=True
            )
        for event in update.events:
            payload = event.payload()
            payload["has_snapshot"] = self.options.snapshot != "off" and event.type != "end"
            self.transport.publish(self.topics.camera_events(self.camera_id), _json(payload))
            self.counters.add(events=1)

    # -- telemetry -----------------------------------------------------------------------------
    def telemetry(self) -> CameraTelemetry:
        now = time.monotonic()
        counts = self.counters.snapshot()
        since, before = self._rates_mark
        self._rates_mark = (now, counts)
        elapsed = max(now - since, 1e-6)

        def rate(name: str) -> float:
            return round(max(0, counts[name] - before[name]) / elapsed, 3)

        with self._in_flight_lock:
            in_flight = self._in_flight
        return CameraTelemetry(
            camera=self.camera_id,
            timestamp=time.time(),
            interval_s=self.options.telemetry_interval_s,
            source=self.source.description,
            frames_read=counts["frames_read"],
            fps=rate("frames_read"),
            detect_fps=rate("frames_gated"),
            motion_frames=counts["motion_frames"],
            motion_fps=rate("motion_frames"),
            keyframes=counts["keyframes"],
            cooldown_frames=counts["cooldown_frames"],
            requests_sent=counts["requests_sent"],
            requests_fps=rate("requests_sent"),
            in_flight=in_flight,
            results=counts["results"],
            degraded=counts["degraded"],
            timeouts=counts["timeouts"],
            rejected=counts["rejected"],
            invalid_results=self.pipeline.invalid_results if self.pipeline is not None else 0,
            skipped=counts["skipped"],
            skipped_fps=rate("skipped"),
            reconnects=counts["reconnects"],
            read_failures=counts["read_failures"],
            errors=counts["errors"],
            events=counts["events"],
            snapshots=counts["snapshots"],
            latency_p50_ms=round(self.latency.percentile(50), 3),
            active=sorted(self.tracker.active),
        )

    def _publish_telemetry(self) -> None:
        self.transport.publish(
            self.topics.telemetry(self.camera_id), self.telemetry().model_dump_json(), qos=0
        )


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))
