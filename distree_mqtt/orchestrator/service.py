"""`distree orchestrator`: estimate load from telemetry and results, publish the policy.

Keeps working with whatever telemetry it has; if it dies, devices keep the last retained
policy, and on restart it continues the retained policy's version numbering.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from distree_mqtt.bundle import Manifest, load_manifest
from distree_mqtt.homeassistant.entities import device_node_id, edge_device_discovery, pipeline_discovery
from distree_mqtt.homeassistant.publisher import DiscoveryPublisher
from distree_mqtt.orchestrator.controller import (
    LoadEstimate,
    StageEstimate,
    ThresholdController,
    predict,
)
from distree_mqtt.policy_defaults import default_policy
from distree_mqtt.protocol import (
    DeviceInfo,
    ErrorReport,
    Policy,
    PolicyMode,
    Result,
    Telemetry,
    stage_telemetry,
)
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import DistreeSettings
from distree_mqtt.topics import Topics, escape_level
from distree_mqtt.transport import LastWill, Message, MqttTransport, Transport

log = logging.getLogger(__name__)
ORCHESTRATOR_ID = "orchestrator"
_THRESHOLDS = TypeAdapter(list[float | None])
_MODE: TypeAdapter[PolicyMode] = TypeAdapter(PolicyMode)


def _finite(value: float) -> float | None:
    # Telemetry is finite but unbounded: rates and utilisations derived from it can overflow,
    # and one infinity would make the state unpublishable (JSON) on every control step.
    return value if math.isfinite(value) else None


@dataclass
class _Rate:
    """Inputs per second a device receives over its last telemetry interval (the controller
    sizes settings for the peak of recent intervals, which absorbs their noise)."""

    timestamp: float
    received: int
    rate: float = 0.0

    def add(self, timestamp: float, received: int) -> None:
        # After a clock step or a restarted device (counter reset) there is no interval yet.
        if timestamp > self.timestamp and received >= self.received:
            self.rate = (received - self.received) / (timestamp - self.timestamp)
        self.timestamp, self.received = timestamp, received


class OrchestratorService:
    # Control steps run every `control_interval_s`; none succeeding for this long is a hang.
    STALL_LIMIT_S = 30.0

    def __init__(self, settings: DistreeSettings, transport: Transport | None = None) -> None:
        self.settings = settings
        self.options = settings.orchestrator.model_copy()
        self.topics = Topics(settings.topic_prefix, settings.pipeline)
        self.manifest: Manifest = load_manifest(self.options.bundle or reference_bundle("mnist"))
        self.num_stages = len(self.manifest.stages)
        self.criterion = self.options.criterion or self.manifest.exit_policy.default_criterion
        self.controller = self._new_controller()
        self.policy = Policy(version=0, mode=self.options.mode, criterion=self.criterion)
        self._retained_version = 0
        self.telemetry: dict[str, Telemetry] = {}
        self.status: dict[str, str] = {}
        self.info: dict[str, DeviceInfo] = {}
        self.rates: dict[str, _Rate] = {}
        # (when, latency_ms, policy_version, answered)
        self.results: deque[tuple[float, float, int | None, bool]] = deque(maxlen=50_000)
        # (when, exit stage or None if not answered) of every result: rates for dashboards
        self.answers: deque[tuple[float, int | None]] = deque(maxlen=50_000)
        self.last_result: dict[str, object] | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_step = time.monotonic()
        self.transport = transport or MqttTransport(
            settings.broker,
            client_id=f"distree-{settings.pipeline}-orchestrator",
            will=LastWill(self.topics.status(ORCHESTRATOR_ID), "offline"),
            on_connected=lambda _: self.transport.publish(
                self.topics.status(ORCHESTRATOR_ID), "online", retain=True
            ),
        )

        home_assistant = settings.homeassistant
        self.discovery: DiscoveryPublisher | None = None
        if home_assistant.enabled:
            self.discovery = DiscoveryPublisher(
                self.transport, home_assistant.discovery_prefix, home_assistant.legacy_discovery
            )

    def _new_controller(self) -> ThresholdController:
        front = self.manifest.exit_policy.profiles.get(self.criterion)
        if not front:
            raise ValueError(f"bundle has no threshold profile for criterion {self.criterion!r}")
        return ThresholdController(front, self.options.latency_target_ms, headroom=self.options.headroom)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.transport.subscribe(self.topics.policy, self._on_retained_policy)
        self.transport.subscribe(self.topics.all_telemetry, self._on_telemetry)
        self.transport.subscribe(self.topics.all_status, self._on_status)
        self.transport.subscribe(self.topics.all_device_info, self._on_device_info)
        self.transport.subscribe(self.topics.all_results, self._on_result)
        self.transport.subscribe(self.topics.all_control_set, self._on_control)
        if self.discovery is not None:
            self.discovery.start()
        if isinstance(self.transport, MqttTransport):
            self.transport.start()
            time.sleep(0.3)  # the retained policy, if any, arrives right after subscribing
        with self._lock:
            self.policy = self._policy_for_mode(version=self._retained_version + 1)
        self._publish_policy()
        self._announce_pipeline()
        self._last_step = time.monotonic()
        self._thread = threading.Thread(target=self._control_loop, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.transport.publish(self.topics.status(ORCHESTRATOR_ID), "stopped", retain=True)
        time.sleep(0.1)
        self.transport.stop()

    # -- inputs (network thread) -----------------------------------------------------------
    def _on_retained_policy(self, message: Message) -> None:
        try:
            retained = Policy.model_validate_json(message.payload)
        except ValidationError:
            return
        with self._lock:
            self._retained_version = max(self._retained_version, retained.version)

    def _on_telemetry(self, message: Message) -> None:
        report = stage_telemetry(
            message.payload, lambda: self._report_error(message.topic, "invalid telemetry")
        )
        if report is None:
            return
        device = self.topics.last_level(message.topic)  # the key status and descriptors use too
        with self._lock:
            if device in self.rates:
                self.rates[device].add(report.timestamp, report.received)
            else:
                self.rates[device] = _Rate(report.timestamp, report.received)
            self.telemetry[device] = report

    def _on_status(self, message: Message) -> None:
        with self._lock:
            self.status[self.topics.last_level(message.topic)] = message.payload.decode("utf-8", "replace")[
                :16
            ]

    def _on_device_info(self, message: Message) -> None:
        device = self.topics.last_level(message.topic)
        with self._lock:
            if not message.payload:
                self.info.pop(device, None)
                self._withdraw_device(device)
                return
            try:
                self.info[device] = DeviceInfo.model_validate_json(message.payload)
            except ValidationError:
                self._report_error(message.topic, "invalid device descriptor")
                return
        self._announce_device(device, self.info[device])

    def _on_result(self, message: Message) -> None:
        try:
            result = Result.model_validate_json(message.payload)
        except ValidationError:
            self._report_error(message.topic, "invalid result")
            return
        with self._lock:
            self.answers.append((time.monotonic(), result.exit_stage if result.ok else None))
            self.last_result = result.model_dump(
                include={"outcome", "label", "class_name", "confidence", "exit_stage", "degraded"}
                | {"reason", "latency_ms", "source", "request_id", "completed_at"}
            )
        if result.latency_ms is None:
            return
        with self._lock:
            self.results.append((time.monotonic(), result.latency_ms, result.policy_version, result.ok))

    def _on_control(self, message: Message) -> None:
        setting = self.topics.last_level(message.topic)
        text = message.payload.decode("utf-8", "replace").strip()
        try:
            self._apply_setting(setting, text)
        except (ValueError, ValidationError) as error:
            reason = (
                str(error).splitlines()[0]
                if not isinstance(error, ValidationError)
                else error.errors()[0]["msg"]
            )
            self._report_error(message.topic, f"rejected {setting}: {reason}"[:300])
            return
        self._publish_policy_now()

    def _apply_setting(self, setting: str, text: str) -> None:
        with self._lock:
            if setting == "latency_target_ms":
                value = float(text)
                if not (math.isfinite(value) and 1 <= value <= 3_600_000):
                    raise ValueError("latency target must be within 1..3600000 ms")
                self.options.latency_target_ms = value
                self.controller.latency_target_ms = value
            elif setting == "mode":
                self.options.mode = _MODE.validate_python(text)
            elif setting == "static_thresholds":
                thresholds = _THRESHOLDS.validate_json(text)
                if len(thresholds) != self.num_stages - 1 or any(
                    t is not None and not math.isfinite(t) for t in thresholds
                ):
                    raise ValueError(f"static thresholds need {self.num_stages - 1} finite numbers or nulls")
                self.options.static_thresholds = thresholds
            elif setting == "criterion":
                if text not in self.manifest.exit_policy.profiles:
                    raise ValueError(
                        f"unknown criterion; known: {', '.join(self.manifest.exit_policy.profiles)}"
                    )
                self.criterion = text
                self.controller = self._new_controller()
            else:
                raise ValueError("unknown setting (latency_target_ms, mode, static_thresholds, criterion)")

    # -- policy ----------------------------------------------------------------------------
    def _policy_for_mode(self, version: int) -> Policy:
        mode: PolicyMode = self.options.mode
        if mode == "no-exit":
            thresholds: list[float | None] = [None] * (self.num_stages - 1)
        elif mode == "static":
            thresholds = (
                self.options.static_thresholds or default_policy(self.manifest, self.criterion).thresholds
            )
        else:
            thresholds = list(self.controller.front[self.controller.current].thresholds)
        return Policy(
            version=version,
            mode=mode,
            criterion=self.criterion,
            thresholds=thresholds,
            latency_target_ms=self.options.latency_target_ms,
            issued_at=time.time(),
        )

    def _publish_policy(self) -> None:
        self.transport.publish(self.topics.policy, self.policy.model_dump_json(), retain=True)

    def _publish_policy_now(self) -> None:
        with self._lock:
            candidate = self._policy_for_mode(self.policy.version + 1)
            self.policy = candidate
        self._publish_policy()

    def load_estimate(self) -> LoadEstimate | None:
        """Current load from the telemetry of online devices (None until every stage reports)."""
        with self._lock:
            online = {
                device: self.telemetry[device]
                for device, status in self.status.items()
                if status == "online" and device in self.telemetry
            }
            stages = []
            for stage in range(self.num_stages):
                reports = [t for t in online.values() if t.stage_index == stage]
                if not reports:
                    return None
                service = statistics.median(t.service_p50_ms or t.compute_p50_ms for t in reports)
                batch = statistics.median(t.batch_compute_p50_ms or t.compute_p50_ms for t in reports)
                stages.append(
                    StageEstimate(
                        service_ms=service,
                        batch_ms=batch,
                        replicas=len(reports),
                        batch_fixed_ms=statistics.median(t.batch_fixed_ms for t in reports),
                        batch_per_request_ms=statistics.median(t.batch_per_request_ms for t in reports),
                        max_batch=min(t.max_batch for t in reports),
                        answer_cost_ms=statistics.median(t.answer_cost_ms for t in reports),
                        forward_cost_ms=statistics.median(t.forward_cost_ms for t in reports),
                    )
                )
            arrival = sum(
                self.rates[d].rate for d, t in online.items() if t.stage_index == 0 and d in self.rates
            )
        return LoadEstimate(arrival_rate=arrival, stages=stages)

    def observed(self, policy_version: int | None = None) -> tuple[float | None, float, int]:
        """(p95 latency, share within target, count) of results in the sliding window, only of
        requests answered under `policy_version` when given (so a switch is judged on its own)."""
        cutoff = time.monotonic() - self.options.window_s
        with self._lock:
            latencies = [
                latency
                for stamp, latency, version, ok in self.results
                if stamp >= cutoff and ok and (policy_version is None or version == policy_version)
            ]
        if len(latencies) < 10:
            return None, 1.0, len(latencies)
        latencies.sort()
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        within = sum(latency <= self.options.latency_target_ms for latency in latencies) / len(latencies)
        return p95, within, len(latencies)

    def result_rates(self) -> tuple[float, list[float] | None]:
        """(results per second, share answered at each exit stage) over the sliding window."""
        cutoff = time.monotonic() - self.options.window_s
        with self._lock:
            recent = [stage for stamp, stage in self.answers if stamp >= cutoff]
        answered = [stage for stage in recent if stage is not None]
        exit_rates = (
            [sum(stage == k for stage in answered) / len(answered) for k in range(self.num_stages)]
            if answered
            else None
        )
        return len(recent) / self.options.window_s, exit_rates

    def control_step(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        load = self.load_estimate()
        observed_p95, _, _ = self.observed(self.policy.version)
        _, within, count = self.observed()
        requests_per_second, exit_rates = self.result_rates()
        changed = False
        with self._lock:
            if self.options.mode == "adaptive" and load is not None:
                self.controller.observe(observed_p95, load)
                before = self.controller.current
                self.controller.choose(load, now)
                changed = self.controller.current != before
            candidate = self._policy_for_mode(self.policy.version)
            if (
                changed
                or candidate.thresholds != self.policy.thresholds
                or candidate.mode != self.policy.mode
            ):
                self.policy = candidate.model_copy(update={"version": self.policy.version + 1})
                changed = True
            point = self.controller.front[self.controller.current]
            prediction = predict(point, load) if load else None
            state = {
                "timestamp": time.time(),
                "policy_version": self.policy.version,
                "mode": self.policy.mode,
                "criterion": self.criterion,
                "thresholds": self.policy.thresholds,
                "latency_target_ms": self.options.latency_target_ms,
                "observed_p95_ms": observed_p95,
                "share_within_target": within,
                "results_in_window": count,
                "correction": round(self.controller.correction, 4),
                "profile_index": self.controller.current,
                "last_change_reason": self.controller.last_reason or None,
                "expected_accuracy": point.accuracy,
                "arrival_rate": _finite(load.arrival_rate) if load else None,
                "predicted_p95_ms": _finite(prediction.p95_ms) if prediction else None,
                "utilisation": [_finite(u) for u in prediction.utilisation] if prediction else None,
                "requests_per_second": round(requests_per_second, 3),
                "exit_rates": exit_rates,
                "last_result": self.last_result,
            }
        if changed:
            self._publish_policy()
        self.transport.publish(
            self.topics.orchestrator_state, json.dumps(state, allow_nan=False, default=str), qos=0
        )

    def _control_loop(self) -> None:
        while not self._stop.wait(self.options.control_interval_s):
            try:
                self.control_step()
                self._last_step = time.monotonic()
            except Exception:  # keep steering with what we have
                log.exception("control step failed")

    # -- health, for the systemd watchdog and `systemctl status` -------------------------------
    def healthy(self) -> bool:
        """The control loop alive and stepping successfully, the MQTT network loop running."""
        if self._thread is None or not self._thread.is_alive():
            return False
        stall_limit_s = max(self.STALL_LIMIT_S, 3 * self.options.control_interval_s)
        if time.monotonic() - self._last_step > stall_limit_s:
            return False
        return not isinstance(self.transport, MqttTransport) or self.transport.running

    def status_line(self) -> str:
        """E.g. `adaptive, target 250 ms, p95 180 ms, policy v7, stages online 3/3`."""
        with self._lock:
            stages_online = {
                report.stage_index
                for device, report in self.telemetry.items()
                if self.status.get(device) == "online"
            }
            mode, version = self.policy.mode, self.policy.version
        p95, _, _ = self.observed()
        observed = f"p95 {p95:.0f} ms" if p95 is not None else "p95 n/a"
        line = (
            f"{mode}, target {self.options.latency_target_ms:g} ms, {observed}, policy v{version}, "
            f"stages online {len(stages_online)}/{self.num_stages}"
        )
        if isinstance(self.transport, MqttTransport) and not self.transport.connected:
            line += ", broker unreachable (reconnecting)"
        return line

    # -- Home Assistant discovery --------------------------------------------------------------
    def _announce_pipeline(self) -> None:
        if self.discovery is None:
            return
        home_assistant = self.settings.homeassistant
        self.discovery.publish(
            pipeline_discovery(
                self.topics,
                self.num_stages,
                node_id=home_assistant.node_id,
                name=home_assistant.device_name,
                model_id=self.manifest.model_id,
                origin=home_assistant.origin(),
            )
        )

    def _announce_device(self, device: str, info: DeviceInfo) -> None:
        if self.discovery is None or escape_level(info.device) != device:
            return  # a descriptor must name the device whose topic it is on
        home_assistant = self.settings.homeassistant
        self.discovery.publish(
            edge_device_discovery(
                self.topics,
                info.device,
                info.stage_index,
                num_stages=info.num_stages,
                node_id=home_assistant.node_id,
                model_id=info.model_id,
                origin=home_assistant.origin(),
            )
        )

    def _withdraw_device(self, device: str) -> None:
        """A device that stopped cleanly cleared its descriptor; ids of restarted devices differ."""
        if self.discovery is not None:
            self.discovery.withdraw(device_node_id(self.topics, device, self.settings.homeassistant.node_id))

    def _report_error(self, topic: str, reason: str) -> None:
        report = ErrorReport(component=ORCHESTRATOR_ID, topic=topic, reason=reason, timestamp=time.time())
        self.transport.publish(self.topics.errors, report.model_dump_json(exclude_none=True), qos=0)
