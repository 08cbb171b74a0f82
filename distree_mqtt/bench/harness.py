"""Shared pieces of the runtime benchmarks: a running pipeline and a load generator."""

from __future__ import annotations

import contextlib
import gc
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distree_mqtt.client import Pipeline, RequestRejected, RequestTimeout
from distree_mqtt.launch import Processes, start_broker, wait_online
from distree_mqtt.protocol import Policy, Result
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message, MqttTransport


@dataclass
class Outcome:
    sent_at: float
    label: int
    result: Result | None  # None: timeout
    kind: str


def summarise_outcomes(outcomes: list[Outcome], target_ms: float, num_stages: int = 3) -> dict[str, Any]:
    answered = [o for o in outcomes if o.result is not None and o.result.ok]
    latencies = np.array(
        [o.result.latency_ms for o in answered if o.result and o.result.latency_ms is not None]
    )
    kinds: dict[str, int] = {}
    for outcome in outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    within = int((latencies <= target_ms).sum()) if len(latencies) else 0
    return {
        "requests": len(outcomes),
        "outcomes": kinds,
        "accuracy": float(np.mean([o.result.label == o.label for o in answered if o.result]))
        if answered
        else 0.0,
        "exit_share": [
            sum(1 for o in answered if o.result and o.result.exit_stage == k) / max(1, len(answered))
            for k in range(num_stages)
        ],
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else None,
        "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
        # Rejections and timeouts count as misses: attainment is over everything sent.
        "within_target": within / max(1, len(outcomes)),
        "latencies_ms": sorted(float(v) for v in latencies),
    }


def collect(futures: list[tuple[float, int, Future[Result]]]) -> list[Outcome]:
    """Wait for every future. Failures are read, not raised: a raised exception's traceback
    holds this frame, whose locals hold the future holding the exception, a cycle that keeps
    the whole list alive until a full garbage collection."""
    outcomes = []
    for sent_at, label, future in futures:
        error = future.exception()
        if error is None:
            result = future.result()
            outcomes.append(Outcome(sent_at, label, result, result.outcome))
        elif isinstance(error, RequestRejected):
            outcomes.append(Outcome(sent_at, label, error.result, "rejected"))
        elif isinstance(error, RequestTimeout):
            outcomes.append(Outcome(sent_at, label, None, "timeout"))
        else:
            raise error
    return outcomes


@contextlib.contextmanager
def generator_without_gc_pauses() -> Iterator[None]:
    """No full garbage collections in the load generator while it sends: it keeps every
    request's future, and a full collection over that growing heap stops it for tens to
    hundreds of milliseconds, then sends the backlog as one burst that the pipeline is blamed
    for. Young collections (fast, they see only new objects) go on; one full collection runs
    afterwards."""
    gc.collect()
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()


def poisson_load(
    client: Pipeline,
    images: np.ndarray,
    labels: np.ndarray,
    rate: float,
    duration_s: float,
    deadline_ms: float,
    seed: int,
) -> list[tuple[float, int, Future[Result]]]:
    """Open-loop Poisson arrivals: sending never waits for answers."""
    rng = np.random.default_rng(seed)
    futures = []
    start = time.monotonic()
    next_at = start
    index = 0
    while True:
        next_at += float(rng.exponential(1.0 / rate))
        if next_at - start > duration_s:
            break
        wait = next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        position = index % len(images)
        futures.append(
            (time.time(), int(labels[position]), client.submit(images[position], deadline_ms=deadline_ms))
        )
        index += 1
    return futures


@dataclass
class RunningPipeline:
    """Broker + orchestrator + devices in their own processes; stop() ends them all."""

    broker: Any
    protocol: str
    pipeline: str
    processes: Processes
    state_trace: list[dict[str, Any]] = field(default_factory=list)
    # Per component (`orchestrator`, `<pipeline>-dev<i>`): its command line and latest process,
    # so fault scenarios can signal one and start it again as systemd would.
    commands: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    _watcher: MqttTransport | None = None
    _admin: MqttTransport | None = None

    @classmethod
    def start(
        cls,
        pipeline: str,
        device_arguments: list[list[str]],
        environment: dict[str, str],
        orchestrator_arguments: list[str] | None = None,
        broker: Any = None,
    ) -> RunningPipeline:
        protocol = "5"
        if broker is None:
            broker, protocol = start_broker("mosquitto")
        processes = Processes()
        common = ["--broker", broker.url, "--pipeline", pipeline]
        env = {"DISTREE_BROKER__PROTOCOL": protocol, **environment}
        commands = {}
        if orchestrator_arguments is not None:
            commands["orchestrator"] = ["orchestrator", *common, *orchestrator_arguments]
        for index, arguments in enumerate(device_arguments):
            device_id = f"{pipeline}-dev{index}"
            commands[device_id] = ["device", *common, "--device-id", device_id, *arguments]
        children = {name: processes.spawn(command, env) for name, command in commands.items()}
        wait_online(broker.url, protocol, pipeline, set(commands), processes)
        running = cls(
            broker, protocol, pipeline, processes, commands=commands, children=children, environment=env
        )
        running._watch()
        time.sleep(1.5)  # one telemetry round: devices know their peers, the orchestrator the load
        return running

    def settings(self, **sections: Any) -> Any:
        return load_settings(
            broker={"url": self.broker.url, "protocol": self.protocol}, pipeline=self.pipeline, **sections
        )

    def _watch(self) -> None:
        topics = Topics(pipeline=self.pipeline)
        import json

        def on_state(message: Message) -> None:
            with contextlib.suppress(ValueError):
                self.state_trace.append(json.loads(message.payload))

        self._watcher = MqttTransport(self.settings().broker, client_id=f"{self.pipeline}-bench-watch")
        self._watcher.subscribe(topics.orchestrator_state, on_state)
        self._watcher.start()
        self._admin = MqttTransport(self.settings().broker, client_id=f"{self.pipeline}-bench-admin")
        self._admin.start()

    def set(self, setting: str, value: str) -> None:
        assert self._admin is not None
        self._admin.publish_and_wait(Topics(pipeline=self.pipeline).control_set(setting), value)
        time.sleep(0.5)

    def publish_policy(self, policy: Policy) -> None:
        """Set a policy directly (no orchestrator), as the retained policy devices apply."""
        assert self._admin is not None
        latest = policy.model_copy(update={"version": 10**6, "issued_at": time.time()})
        self._admin.publish_and_wait(
            Topics(pipeline=self.pipeline).policy, latest.model_dump_json(), retain=True
        )
        time.sleep(0.5)

    def client(self, source: str) -> Pipeline:
        return Pipeline(
            settings=self.settings(client={"source": source, "grace_ms": 3000, "image_codec": "raw"})
        )

    def signal(self, component: str, signum: signal.Signals) -> None:
        """Send a signal to one component's process (SIGKILL, SIGSTOP, SIGCONT, ...)."""
        self.children[component].send_signal(signum)

    def restart(self, component: str) -> None:
        """Start a component again with its command line (after it died, as systemd's
        Restart=on-failure would); returns without waiting for it to come online."""
        old = self.children[component]
        if old.poll() is None:
            raise RuntimeError(f"{component} is still running (pid {old.pid})")
        self.children[component] = self.processes.spawn(self.commands[component], self.environment)

    def stop(self, keep_broker: bool = False) -> None:
        for transport in (self._watcher, self._admin):
            if transport is not None:
                transport.stop()
        self.processes.stop()
        if not keep_broker:
            self.broker.stop()


def drain(seconds: float = 2.0) -> None:
    threading.Event().wait(seconds)
