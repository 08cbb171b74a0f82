"""Fault scenarios against real Mosquitto and real device processes: every request must end
exactly once (docs/reliability.md; `distree bench reliability` regenerates it).

One pipeline (stage 0, two replicas of stage 1, stage 2, the orchestrator) runs on a
Mosquitto with persistence. Each scenario streams steady traffic from its own client, injects
one fault (SIGKILL, SIGSTOP, a broker restart, ...), keeps streaming, then waits until the
client's ledger has settled every request. The overload scenario runs on a pipeline of its
own: one slow stage-0 device fed ten times its capacity.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distree_mqtt.bench.harness import RunningPipeline
from distree_mqtt.broker import MosquittoBroker
from distree_mqtt.client import Pipeline
from distree_mqtt.client.ledger import OUTCOMES, RequestRecord
from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message, MqttTransport

STAGE0, STAGE1_A, STAGE1_B, STAGE2 = (f"rel-dev{i}" for i in range(4))
PIPELINE = "rel"


@dataclass
class ReliabilityOptions:
    rate: float = 40.0  # requests per second, steady
    before_s: float = 3.0  # traffic before the fault
    after_s: float = 9.0  # traffic after the fault starts
    deadline_ms: float = 2000.0
    grace_ms: float = 6000.0  # long enough to cover a device restart (Python, torch, the stage)
    # Stage time x F (Pi-like devices): about 15-30 ms a request, so a device killed or frozen
    # has work in hand, and the acknowledge-after-answer path is what saves it.
    slowdown: float = 60.0
    overload_slowdown: float = 400.0  # the overloaded device: about 10 requests/s
    keepalive_s: int = 3  # the broker publishes a Last Will 1.5 x this after the last packet
    restart_after_s: float = 1.0  # as systemd's RestartSec=1
    overload_factor: float = 10.0
    scenarios: tuple[str, ...] = ()  # empty: all


@dataclass
class ScenarioReport:
    name: str
    fault: str
    sent: int
    outcomes: dict[str, int]
    lost: int
    duplicates: int
    pending: int
    degraded_share: float
    recovery_s: float | None
    details: dict[str, Any] = field(default_factory=dict)
    timeline: dict[str, list[int]] = field(default_factory=dict)  # per second since start, by kind

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.pending == 0


def recovery_seconds(
    records: list[RequestRecord], fault_at: float, window_s: float = 1.0, share: float = 0.95
) -> float | None:
    """From the fault to the start of the first `window_s` of requests (sent after the fault)
    answered with a full `result` at `share` or more: results flow normally again."""
    after = sorted((r for r in records if r.sent_at >= fault_at), key=lambda r: r.sent_at)
    for index, first in enumerate(after):
        window = [r for r in after[index:] if r.sent_at < first.sent_at + window_s]
        if first.sent_at + window_s > after[-1].sent_at:
            return None  # no full window left
        if sum(r.outcome == "result" for r in window) >= share * len(window):
            return round(first.sent_at - fault_at, 2)
    return None


def timeline_of(records: list[RequestRecord], start: float) -> dict[str, list[int]]:
    """Requests per second of sending, by how they ended."""
    if not records:
        return {}
    seconds = int(max(r.sent_at for r in records) - start) + 1
    counts = {kind: [0] * seconds for kind in (*OUTCOMES, "lost")}
    for record in records:
        kind = record.outcome or "lost"
        counts[kind][int(record.sent_at - start)] += 1
    return counts


class Traffic:
    """Steady requests from one client in a thread; `run` sends for `duration_s`."""

    def __init__(self, client: Pipeline, rate: float, deadline_ms: float) -> None:
        self.client = client
        self.rate = rate
        self.deadline_ms = deadline_ms
        self.images = load_dataset(DataSpec()).test.images[:500, 0]
        self._thread: threading.Thread | None = None

    def start(self, duration_s: float) -> None:
        self._thread = threading.Thread(target=self._send, args=(duration_s,), name="traffic", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _send(self, duration_s: float) -> None:
        started = time.monotonic()
        for index in itertools.count():
            due = started + index / self.rate
            if due - started > duration_s:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            self.client.submit(self.images[index % len(self.images)], deadline_ms=self.deadline_ms)


def wait_settled(client: Pipeline, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while client.ledger.pending and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # a late second answer would arrive now: let the ledger count it


class StatusWatch:
    """Retained status of every component, to wait for a Last Will or a return online."""

    def __init__(self, running: RunningPipeline) -> None:
        self.topics = Topics(pipeline=running.pipeline)
        self.status: dict[str, str] = {}
        self._changed = threading.Condition()
        self._transport = MqttTransport(
            running.settings().broker, client_id=f"{running.pipeline}-status-watch"
        )
        self._transport.subscribe(self.topics.all_status, self._on_status)
        self._transport.start()

    def _on_status(self, message: Message) -> None:
        with self._changed:
            self.status[self.topics.last_level(message.topic)] = message.payload.decode(errors="replace")
            self._changed.notify_all()

    def wait_for(self, component: str, status: str, timeout_s: float) -> float:
        """Seconds waited until `component` reports `status`."""
        started = time.monotonic()
        with self._changed:
            if not self._changed.wait_for(lambda: self.status.get(component) == status, timeout_s):
                raise RuntimeError(f"{component} did not turn {status} within {timeout_s:.0f} s")
        return round(time.monotonic() - started, 2)

    def stop(self) -> None:
        self._transport.stop()


# -- faults: each gets the running pipeline and returns details for the report ---------------
Fault = Callable[[RunningPipeline, StatusWatch, ReliabilityOptions], dict[str, Any]]


def _kill_and_restart(*components: str) -> Fault:
    def fault(running: RunningPipeline, watch: StatusWatch, options: ReliabilityOptions) -> dict[str, Any]:
        for component in components:
            running.signal(component, signal.SIGKILL)
            running.children[component].wait()
        time.sleep(options.restart_after_s)
        for component in components:
            running.restart(component)
        waited = max(watch.wait_for(component, "online", 120) for component in components)
        return {"back_online_after_restart_s": waited}

    return fault


def _freeze_until_will(component: str) -> Fault:
    def fault(running: RunningPipeline, watch: StatusWatch, options: ReliabilityOptions) -> dict[str, Any]:
        running.signal(component, signal.SIGSTOP)
        try:
            frozen = watch.wait_for(component, "offline", 10 * options.keepalive_s)
        finally:
            running.signal(component, signal.SIGCONT)
        back = watch.wait_for(component, "online", 60)
        return {"last_will_after_s": frozen, "back_online_after_resume_s": back}

    return fault


def _restart_broker(
    running: RunningPipeline, watch: StatusWatch, options: ReliabilityOptions
) -> dict[str, Any]:
    broker = running.broker
    broker.stop()  # SIGTERM: Mosquitto saves its persistence file on the way out
    time.sleep(options.restart_after_s)
    broker.start()
    return {"broker_down_s": options.restart_after_s}


def _restart_orchestrator(
    running: RunningPipeline, watch: StatusWatch, options: ReliabilityOptions
) -> dict[str, Any]:
    before = _latest_policy_version(running)
    running.signal("orchestrator", signal.SIGKILL)
    running.children["orchestrator"].wait()
    time.sleep(options.restart_after_s)
    running.restart("orchestrator")
    back = watch.wait_for("orchestrator", "online", 120)
    deadline = time.monotonic() + 30
    after = _latest_policy_version(running)
    while after <= before and time.monotonic() < deadline:
        time.sleep(0.2)
        after = _latest_policy_version(running)
    return {
        "back_online_after_restart_s": back,
        "policy_version_before": before,
        "policy_version_after": after,
    }


def _latest_policy_version(running: RunningPipeline) -> int:
    versions = [int(state["policy_version"]) for state in running.state_trace if "policy_version" in state]
    return max(versions, default=-1)


SCENARIOS: dict[str, tuple[str, Fault]] = {
    "kill-replica": ("SIGKILL one of two stage-1 replicas, restart after 1 s", _kill_and_restart(STAGE1_A)),
    "kill-last-stage": ("SIGKILL the only stage-2 device, restart after 1 s", _kill_and_restart(STAGE2)),
    "kill-first-stage": ("SIGKILL the only stage-0 device, restart after 1 s", _kill_and_restart(STAGE0)),
    "freeze-stage": (
        "SIGSTOP the stage-2 device until its Last Will, then SIGCONT",
        _freeze_until_will(STAGE2),
    ),
    "broker-restart": ("SIGTERM Mosquitto (persistence on), start it again after 1 s", _restart_broker),
    "orchestrator-restart": ("SIGKILL the orchestrator, restart after 1 s", _restart_orchestrator),
}
OVERLOAD = "overload"
ALL_SCENARIOS = (*SCENARIOS, OVERLOAD)


def _environment(options: ReliabilityOptions) -> dict[str, str]:
    return {
        "DISTREE_BROKER__KEEPALIVE_S": str(options.keepalive_s),
        "DISTREE_DEVICE__SESSION_EXPIRY_S": "300",
        # High static thresholds: most requests cross every stage, so every fault matters.
        "DISTREE_ORCHESTRATOR__STATIC_THRESHOLDS": "[0.999, 0.999]",
    }


def start_fault_pipeline(options: ReliabilityOptions) -> RunningPipeline:
    """Stage 0, two stage-1 replicas, stage 2 and a static-mode orchestrator on a Mosquitto with
    persistence; thresholds high enough that most requests cross every stage."""
    broker = MosquittoBroker(persistence=True).start()
    slowdown = ["--slowdown", str(options.slowdown)]
    try:
        running = RunningPipeline.start(
            PIPELINE,
            [
                ["--stage", "0", *slowdown],
                ["--stage", "1", *slowdown],
                ["--stage", "1", *slowdown],
                ["--stage", "2", *slowdown],
            ],
            _environment(options),
            orchestrator_arguments=["--mode", "static"],
            broker=broker,
        )
    except Exception:
        broker.stop()
        raise
    return running


def run_fault_scenario(running: RunningPipeline, name: str, options: ReliabilityOptions) -> ScenarioReport:
    description, fault = SCENARIOS[name]
    settings = running.settings(
        client={"source": f"reliability-{name}", "grace_ms": options.grace_ms, "image_codec": "raw"}
    )
    watch = StatusWatch(running)
    try:
        with Pipeline(settings=settings) as client:
            traffic = Traffic(client, options.rate, options.deadline_ms)
            start = time.time()
            traffic.start(options.before_s + options.after_s)
            time.sleep(options.before_s)
            fault_at = time.time()
            details = fault(running, watch, options)
            traffic.join()
            wait_settled(client, (options.deadline_ms + options.grace_ms) / 1000.0 + 10.0)
            return _report(name, description, client, start, fault_at, details)
    finally:
        watch.stop()


def run_overload_scenario(options: ReliabilityOptions) -> ScenarioReport:
    """One stage-0 device (queue 16, batches of 1, slow) fed `overload_factor` x its capacity."""
    queue_capacity = 16
    slowdown = options.overload_slowdown
    broker = MosquittoBroker(persistence=True).start()
    try:
        running = RunningPipeline.start(
            "overload",
            [
                [
                    "--stage",
                    "0",
                    "--slowdown",
                    str(slowdown),
                    "--max-batch",
                    "1",
                    "--queue-capacity",
                    str(queue_capacity),
                ]
            ],
            _environment(options),
            broker=broker,
        )
    except Exception:
        broker.stop()
        raise
    device = "overload-dev0"
    try:
        capacity = _measured_capacity(running, device)
        rate = options.overload_factor * capacity
        settings = running.settings(
            client={"source": "reliability-overload", "grace_ms": options.grace_ms, "image_codec": "raw"}
        )
        pid = running.children[device].pid
        rss_before = _rss_kib(pid)
        rss_peak = rss_before
        with Pipeline(settings=settings) as client:
            traffic = Traffic(client, rate, options.deadline_ms)
            start = time.time()
            traffic.start(options.before_s + options.after_s)
            while traffic._thread is not None and traffic._thread.is_alive():
                rss_peak = max(rss_peak, _rss_kib(pid))
                time.sleep(0.2)
            wait_settled(client, (options.deadline_ms + options.grace_ms) / 1000.0 + 10.0)
            details = {
                "capacity_per_s": round(capacity, 1),
                "offered_per_s": round(rate, 1),
                "queue_capacity": queue_capacity,
                "rss_before_mib": round(rss_before / 1024, 1),
                "rss_peak_mib": round(rss_peak / 1024, 1),
            }
            description = (
                f"one stage-0 device (queue {queue_capacity}) at {options.overload_factor:.0f}x its capacity"
            )
            return _report(OVERLOAD, description, client, start, start, details)
    finally:
        running.stop()


def _measured_capacity(running: RunningPipeline, device: str) -> float:
    """Requests per second the device serves: 1000 / its per-request service time (telemetry)."""
    import json

    topics = Topics(pipeline=running.pipeline)
    samples: list[float] = []
    done = threading.Event()

    def on_telemetry(message: Message) -> None:
        with contextlib.suppress(ValueError, KeyError):
            report = json.loads(message.payload)
            per_request = float(report["batch_fixed_ms"]) + float(report["batch_per_request_ms"])
            if per_request > 0:
                samples.append(1000.0 / per_request)
                done.set()

    transport = MqttTransport(running.settings().broker, client_id=f"{running.pipeline}-capacity")
    transport.subscribe(topics.telemetry(device), on_telemetry)
    transport.start()
    try:
        done.wait(10)
    finally:
        transport.stop()
    if not samples:
        raise RuntimeError(f"no telemetry from {device}")
    return samples[-1]


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _report(
    name: str, description: str, client: Pipeline, start: float, fault_at: float, details: dict[str, Any]
) -> ScenarioReport:
    summary = client.ledger.summary()
    records = client.ledger.records()
    return ScenarioReport(
        name=name,
        fault=description,
        sent=summary["sent"],
        outcomes=summary["outcomes"],
        lost=summary["lost"],
        duplicates=summary["duplicates"],
        pending=summary["pending"],
        degraded_share=round(summary["degraded_share"], 4),
        recovery_s=recovery_seconds(records, fault_at) if name != OVERLOAD else None,
        details={**details, "p50_latency_ms": _median(client.ledger.latencies_ms())},
        timeline=timeline_of(records, start),
    )


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 1) if values else None


def run_reliability(
    options: ReliabilityOptions, progress: Callable[[str], None] = print
) -> list[ScenarioReport]:
    """Run the chosen scenarios (all by default) and return their reports."""
    chosen = options.scenarios or ALL_SCENARIOS
    unknown = set(chosen) - set(ALL_SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(ALL_SCENARIOS)}")
    reports = []
    faults = [name for name in SCENARIOS if name in chosen]
    if faults:
        running = start_fault_pipeline(options)
        try:
            for name in faults:
                progress(f"scenario {name} ...")
                reports.append(run_fault_scenario(running, name, options))
                time.sleep(1.0)
        finally:
            running.stop()
    if OVERLOAD in chosen:
        progress(f"scenario {OVERLOAD} ...")
        reports.append(run_overload_scenario(options))
    return reports


def report_dict(reports: list[ScenarioReport], options: ReliabilityOptions) -> dict[str, Any]:
    return {"options": asdict(options), "scenarios": [{**asdict(r), "passed": r.passed} for r in reports]}
