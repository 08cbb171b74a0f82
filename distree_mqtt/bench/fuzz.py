"""`distree bench fuzz`: hostile input on every topic live services subscribe to.

A private Mosquitto, three stage devices, the orchestrator (mode no-exit, Home Assistant
discovery on) and, optionally, a camera run as real processes. The campaign publishes the
inputs of `distree_mqtt.bench.fuzz_inputs` (Hypothesis strategies, random bytes) to:
`stage/<k>/in` for every stage, `control/set/<setting>`, `control/policy` (retained, then
cleaned up), `status/<id>`, `devices/<id>`, `telemetry/<id>`, `homeassistant/status` and
`results/<source>` (read by the orchestrator and the camera). Meanwhile a valid client sends
real images, before, during and after the fuzzing, and every answer is checked against the
in-process pipeline. A monitor subscribed to `#` records every topic that appears, every entry
on `errors` and every result; RSS of every process is sampled each second.

`run_fuzz_campaign(size="short" | "long")` returns a JSON-able dict:

* `topics`: per target (`stage/0/in`, ..., `control/set/<setting>`, `control/policy`,
  `status/<id>`, `devices/<id>`, `telemetry/<id>`, `homeassistant/status`, `results/<source>`):
  `inputs` (tried), `cases` (inputs per case), `expected` (inputs per promised outcome:
  rejected / answered / ignored / dropped), `error_entries_expected` (rejected inputs x the
  components that read the topic), `error_entries_seen` (entries on `errors` naming a topic of
  the target), `answered_expected` / `answered_seen` (valid requests from hostile sources);
* `valid_traffic`: `sent`, `answered`, `correct` (same label as the in-process pipeline), per
  phase (`warmup`, `during`, `after`), and `wrong` (any that were not);
* `crashes` (processes that exited during the campaign, must be 0) and `exited` (their names);
* `service_counters`: per device, the change of its telemetry counters `rejected` and
  `errors`; for the camera, `invalid_results` and `errors`;
* `rss`: `samples` ([{"t": s, <process>: KiB}]), `growth` per process (RSS after warm-up,
  final, max, final / after-warm-up ratio), `bound` (1.2) and `bounded`;
* `policy`: the valid version before, whether every device kept it while garbage was retained,
  whether the retained policy is valid again after the clean-up, and the devices on it;
* `orchestrator_state_with_ghosts` / `orchestrator_state_after_fuzz`: `orchestrator/state`
  messages while ghost stage devices with overflowing telemetry are online, and after fuzzing
  (the control loop still steps);
* `topics_seen`, `topic_violations` (topics not of a documented form: must be empty);
* `totals`: `inputs`, `error_entries_expected`, `error_entries_seen`, `crashes`.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distree_mqtt.bench.fuzz_inputs import (
    FuzzContext,
    FuzzInput,
    control_cases,
    descriptor_cases,
    draw,
    ghost_id,
    home_assistant_cases,
    policy_cases,
    policy_refused,
    rate_overflow_telemetry,
    results_cases,
    stage_input_cases,
    status_cases,
    telemetry_cases,
)
from distree_mqtt.bench.harness import RunningPipeline
from distree_mqtt.bench.memory import RssSampler, growth
from distree_mqtt.broker import MosquittoBroker
from distree_mqtt.bundle import load_manifest
from distree_mqtt.launch import wait_online
from distree_mqtt.protocol import Policy, Result
from distree_mqtt.reference import reference_bundle
from distree_mqtt.topics import Topics
from distree_mqtt.transport import Message, MqttTransport

Size = Literal["short", "long"]
# Inputs drawn per stage-input case; the other targets get a multiple of it.
EXAMPLES: dict[str, int] = {"short": 3, "long": 40}
PIPELINE = "fuzz"
CAMERA_ID = "fuzz-cam"
PROBE_SOURCE = "fuzz-probe"
MAX_MESSAGE_BYTES = 256 * 1024
RSS_BOUND = 1.2
NO_EXIT = Policy(version=0, mode="no-exit", thresholds=[None, None])
HOME_ASSISTANT_STATUS = "homeassistant/status"

# Who reports a rejected message of each target on `errors` (3 devices, 1 orchestrator).
READERS = {
    "stage": 1,
    "control/set/<setting>": 1,
    "control/policy": 3,
    "devices/<id>": 4,
    "telemetry/<id>": 4,
    "results/<source>": 1,
}


@dataclass
class _Target:
    name: str
    inputs: list[FuzzInput]
    topic: str | None  # the topic of inputs that carry none of their own
    retain: bool = False
    readers: int = 0
    errors_topic_prefix: str = ""


class _Monitor:
    """Subscribed to `#`: every topic seen, every `errors` entry, results and telemetry."""

    def __init__(self, running: RunningPipeline, topics: Topics) -> None:
        self.topics = topics
        self.seen: set[str] = set()
        self.errors: list[dict[str, Any]] = []
        self.results: list[Result] = []
        self.telemetry: dict[str, dict[str, Any]] = {}
        self.state_times: list[float] = []
        self.policy: bytes | None = None
        self._lock = threading.Lock()
        self.transport = MqttTransport(running.settings().broker, client_id=f"{PIPELINE}-monitor")
        self.transport.subscribe("#", self._on_message)
        self.transport.start()

    def _on_message(self, message: Message) -> None:
        topic = message.topic
        with self._lock:
            self.seen.add(topic)
            if topic == self.topics.errors:
                with contextlib.suppress(ValueError):
                    self.errors.append(json.loads(message.payload))
            elif topic.startswith(f"{self.topics.root}/results/"):
                with contextlib.suppress(ValueError):
                    self.results.append(Result.model_validate_json(message.payload))
            elif topic.startswith(f"{self.topics.root}/telemetry/"):
                with contextlib.suppress(ValueError):
                    report = json.loads(message.payload)
                    if isinstance(report, dict) and isinstance(
                        report.get("device") or report.get("camera"), str
                    ):
                        self.telemetry[self.topics.last_level(topic)] = report
            elif topic == self.topics.orchestrator_state:
                self.state_times.append(time.monotonic())
            elif topic == self.topics.policy:
                self.policy = message.payload

    def errors_on(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for entry in self.errors if str(entry.get("topic", "")).startswith(prefix))

    def stop(self) -> None:
        self.transport.stop()


def documented_topic_forms(topics: Topics, discovery_prefix: str = "homeassistant") -> list[re.Pattern[str]]:
    """The topic forms of docs/protocol.md and homeassistant/README.md; every level that comes
    from a client-supplied string is escaped (only [A-Za-z0-9_.-], %XX and the ~digest)."""
    root = re.escape(topics.root)
    level = r"[A-Za-z0-9_.~%-]+"
    forms = [
        rf"{root}/stage/\d+/in",
        rf"{root}/results/{level}",
        rf"{root}/reply/{level}",
        rf"{root}/progress/{level}",
        rf"{root}/control/policy",
        rf"{root}/control/set/{level}",
        rf"{root}/(telemetry|status|devices)/{level}",
        rf"{root}/orchestrator/state",
        rf"{root}/errors",
        rf"{root}/camera/{level}/(state|events|snapshot)",
        rf"{root}/camera/{level}/detected/{level}",
        rf"{re.escape(discovery_prefix)}/status",
        rf"{re.escape(discovery_prefix)}/device/{level}/config",
        rf"{re.escape(discovery_prefix)}/[a-z_]+/{level}/{level}/config",
    ]
    return [re.compile(form) for form in forms]


def _context(topics: Topics) -> FuzzContext:
    manifest = load_manifest(reference_bundle("mnist"))
    return FuzzContext(
        topics=topics,
        model_hash=manifest.content_hash,
        stage_input_shapes=[list(stage.input_shape) for stage in manifest.stages],
        class_count=len(manifest.input.class_names),
        codec="int8+zstd",
        max_message_bytes=MAX_MESSAGE_BYTES,
        criteria=tuple(manifest.exit_policy.profiles),
        stages=len(manifest.stages),
    )


def build_targets(context: FuzzContext, size: Size, seed: int, camera: bool) -> list[_Target]:
    """Every subscribed topic and its drawn inputs (before any service starts)."""
    n = EXAMPLES[size]
    topics = context.topics
    targets = []
    for stage in range(context.stages):
        inputs = [
            value
            for index, strategy in enumerate(stage_input_cases(context, stage))
            for value in draw(strategy, n, seed + 100 * stage + index)
        ]
        targets.append(
            _Target(
                f"stage/{stage}/in", inputs, topics.stage_input(stage), False, 1, topics.stage_input(stage)
            )
        )
    sources = [f"fuzz-results-{index}" for index in range(3)] + ([CAMERA_ID] if camera else [])
    policies = [
        value
        for value in draw(policy_cases(context), 4 * n, seed + 1)
        if policy_refused(value.payload, context)
    ]
    ghosts = [
        FuzzInput("ghost_online", b"online", "ignored", topic=topics.status(ghost_id(k)))
        for k in range(context.stages)
    ]
    targets += [
        _Target(
            "control/set/<setting>",
            draw(control_cases(context), 8 * n, seed + 2),
            None,
            False,
            READERS["control/set/<setting>"],
            f"{topics.root}/control/set/",
        ),
        _Target("control/policy", policies, topics.policy, True, READERS["control/policy"], topics.policy),
        _Target("status/<id>", ghosts + draw(status_cases(context), 4 * n, seed + 3), None),
        _Target(
            "devices/<id>",
            draw(descriptor_cases(context), 4 * n, seed + 4),
            None,
            False,
            READERS["devices/<id>"],
            f"{topics.root}/devices/",
        ),
        _Target(
            "telemetry/<id>",
            draw(telemetry_cases(context), 8 * n, seed + 5) + rate_overflow_telemetry(context),
            None,
            False,
            READERS["telemetry/<id>"],
            f"{topics.root}/telemetry/",
        ),
        _Target(HOME_ASSISTANT_STATUS, draw(home_assistant_cases(), 2 * n, seed + 6), HOME_ASSISTANT_STATUS),
        _Target(
            "results/<source>",
            draw(results_cases(context, sources), 4 * n, seed + 7),
            None,
            False,
            READERS["results/<source>"],
            f"{topics.root}/results/",
        ),
    ]
    return targets


class _Probe:
    """The valid client: real images at a steady rate, each checked against the local pipeline."""

    def __init__(self, running: RunningPipeline, interval_s: float) -> None:
        from distree_mqtt.data import DataSpec, load_dataset
        from distree_mqtt.device.local import LocalPipeline

        data = load_dataset(DataSpec())
        self.images = data.test.images[:40, 0]
        local = LocalPipeline(reference_bundle("mnist"), codec="int8+zstd")
        self.expected = [local.infer(image, NO_EXIT, image_codec="raw").label for image in self.images]
        self.interval_s = interval_s
        self.client = running.client(PROBE_SOURCE)
        self.sent: list[tuple[str, int, Future[Result]]] = []
        self.phase = "warmup"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, count: int) -> None:
        for _ in range(count):
            index = len(self.sent) % len(self.images)
            self.sent.append((self.phase, index, self.client.submit(self.images[index], deadline_ms=30_000)))

    def run_in_background(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.send(1)

        self._thread = threading.Thread(target=loop, name="fuzz-probe", daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        phases: dict[str, Counter[str]] = defaultdict(Counter)
        wrong: list[dict[str, Any]] = []
        for phase, index, future in self.sent:
            phases[phase]["sent"] += 1
            try:
                result = future.result(timeout=60)
            except Exception as error:  # rejected or timed out: a failure of the campaign
                wrong.append({"phase": phase, "error": f"{type(error).__name__}: {error}"[:200]})
                continue
            phases[phase]["answered"] += 1
            if result.label == self.expected[index] and result.outcome == "result":
                phases[phase]["correct"] += 1
            else:
                wrong.append(
                    {
                        "phase": phase,
                        "outcome": result.outcome,
                        "label": result.label,
                        "expected": self.expected[index],
                        "reason": result.reason,
                    }
                )
        total = sum(phases.values(), Counter())
        return {
            "sent": total["sent"],
            "answered": total["answered"],
            "correct": total["correct"],
            "by_phase": {phase: dict(counts) for phase, counts in phases.items()},
            "wrong": wrong[:20],
        }

    def close(self) -> None:
        self.client.close()


def _start_camera(running: RunningPipeline, folder: Path) -> None:
    import cv2

    from distree_mqtt.data import DataSpec, load_dataset

    for index, image in enumerate(load_dataset(DataSpec()).test.images[:4, 0]):
        cv2.imwrite(str(folder / f"{index}.png"), image)
    running.processes.spawn(
        [
            "camera",
            "--broker",
            running.broker.url,
            "--pipeline",
            PIPELINE,
            "--camera-id",
            CAMERA_ID,
            "--source",
            str(folder),
            "--fps",
            "1",
            "--motion",
            "none",
        ],
        {
            "DISTREE_BROKER__PROTOCOL": running.protocol,
            "DISTREE_CAMERA__LOOP": "true",
            "DISTREE_HOMEASSISTANT__ENABLED": "true",
        },
    )
    wait_online(running.broker.url, running.protocol, PIPELINE, {CAMERA_ID}, running.processes)


def _process_names(running: RunningPipeline, camera: bool) -> dict[str, int]:
    assert running.broker.process is not None
    pids = {"broker": running.broker.process.pid}
    names = ["orchestrator", *(f"device-{k}" for k in range(3))] + (["camera"] if camera else [])
    for name, child in zip(names, running.processes.children, strict=True):
        pids[name] = child.pid
    return pids


def _counters(monitor: _Monitor) -> dict[str, dict[str, int]]:
    with monitor._lock:
        reports = dict(monitor.telemetry)
    counters = {}
    for device, report in reports.items():
        if device.startswith(f"{PIPELINE}-dev"):
            counters[device] = {
                "rejected": int(report.get("rejected", 0)),
                "errors": int(report.get("errors", 0)),
            }
        elif device == CAMERA_ID:
            counters[device] = {
                "invalid_results": int(report.get("invalid_results", 0)),
                "errors": int(report.get("errors", 0)),
            }
    return counters


def _publish_all(fuzzer: MqttTransport, target: _Target, rate: float) -> None:
    pause = 1.0 / rate
    for value in target.inputs:
        topic = value.topic or target.topic
        assert topic is not None
        fuzzer.publish(topic, value.payload, qos=1, retain=target.retain)
        time.sleep(pause)


def run_fuzz_campaign(
    size: Size = "short",
    seed: int = 0,
    camera: bool = True,
    publish_rate: float = 100.0,
    probe_interval_s: float = 0.5,
) -> dict[str, Any]:
    """Run the campaign (short: about a minute; long: several) and return the report dict
    described in the module docstring."""
    started = time.monotonic()
    topics = Topics(pipeline=PIPELINE)
    context = _context(topics)
    targets = build_targets(context, size, seed, camera)
    environment = {
        "DISTREE_DEVICE__MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "DISTREE_HOMEASSISTANT__ENABLED": "true",
    }
    broker = MosquittoBroker().start()
    running = RunningPipeline.start(
        PIPELINE,
        [["--stage", str(k)] for k in range(context.stages)],
        environment,
        ["--mode", "no-exit", "--latency-target-ms", "1000"],
        broker=broker,
    )
    scratch = tempfile.TemporaryDirectory(prefix="distree-fuzz-")
    monitor: _Monitor | None = None
    probe: _Probe | None = None
    sampler: RssSampler | None = None
    fuzzer: MqttTransport | None = None
    try:
        if camera:
            _start_camera(running, Path(scratch.name))
        pids = _process_names(running, camera)
        sampler = RssSampler(pids).start()
        monitor = _Monitor(running, topics)
        fuzzer = MqttTransport(running.settings().broker, client_id=f"{PIPELINE}-fuzzer")
        fuzzer.start()
        probe = _Probe(running, probe_interval_s)
        # Warm-up: every stage has run real requests; the memory baseline is taken after it.
        probe.send(6)
        for _, _, future in probe.sent:
            with contextlib.suppress(Exception):
                future.result(timeout=60)
        time.sleep(1.5)
        warm_t = sampler.sample()["t"]
        counters_before = _counters(monitor)
        valid_policy = monitor.policy
        valid_version = Policy.model_validate_json(valid_policy).version if valid_policy else None

        probe.phase = "during"
        probe.run_in_background()
        policy_check: dict[str, Any] = {"valid_version_before": valid_version}
        for target in targets:
            _publish_all(fuzzer, target, publish_rate)
            if target.name == "control/policy":
                time.sleep(1.5)  # two telemetry rounds with garbage retained
                versions = {
                    device: monitor.telemetry.get(device, {}).get("policy_version")
                    for device in (f"{PIPELINE}-dev{k}" for k in range(context.stages))
                }
                policy_check["device_versions_with_garbage_retained"] = versions
                policy_check["devices_kept_valid_policy"] = all(v == valid_version for v in versions.values())
                # Clean-up: any accepted setting makes the orchestrator publish a fresh policy.
                fuzzer.publish_and_wait(topics.control_set("mode"), "no-exit")
        ghosts_until = time.monotonic()
        time.sleep(2.5)  # control steps with the ghost devices still online
        state_with_ghosts = sum(1 for at in monitor.state_times if at >= ghosts_until)
        for k in range(context.stages):  # the ghosts go away
            fuzzer.publish(topics.status(ghost_id(k)), "offline")
        probe.stop_background()
        fuzz_end = time.monotonic()
        probe.phase = "after"
        probe.send(8)
        valid = probe.summary()
        time.sleep(2.5)  # last telemetry and errors arrive
        try:
            retained = Policy.model_validate_json(monitor.policy or b"")
            policy_check["retained_after_cleanup_valid"] = True
            policy_check["version_after_cleanup"] = retained.version
            policy_check["devices_on_it"] = all(
                monitor.telemetry.get(f"{PIPELINE}-dev{k}", {}).get("policy_version") == retained.version
                for k in range(context.stages)
            )
        except ValueError:
            policy_check["retained_after_cleanup_valid"] = False
        counters_after = _counters(monitor)
        exited = [
            name
            for name, child in zip(list(pids)[1:], running.processes.children, strict=True)
            if child.poll() is not None
        ]
        if broker.process is None or broker.process.poll() is not None:
            exited.append("broker")
        sampler.stop()
        samples = sampler.samples
        rss_growth = growth(samples, warm_t, list(pids))
        state_after = sum(1 for at in monitor.state_times if at >= fuzz_end)
        forms = documented_topic_forms(topics)
        violations = sorted(
            topic for topic in monitor.seen if not any(form.fullmatch(topic) for form in forms)
        )
        answered = {(result.source, result.request_id) for result in monitor.results if result.ok}
        report_topics = {}
        for target in targets:
            expect = Counter(value.expect for value in target.inputs)
            requests = [value.request for value in target.inputs if value.request is not None]
            report_topics[target.name] = {
                "inputs": len(target.inputs),
                "cases": dict(Counter(value.case for value in target.inputs)),
                "expected": dict(expect),
                "error_entries_expected": expect["rejected"] * target.readers,
                "error_entries_seen": monitor.errors_on(target.errors_topic_prefix) if target.readers else 0,
                "answered_expected": len(requests),
                "answered_seen": sum(1 for request in requests if request in answered),
            }
        report: dict[str, Any] = {
            "size": size,
            "seed": seed,
            "camera": camera,
            "duration_s": round(time.monotonic() - started, 1),
            "topics": report_topics,
            "valid_traffic": valid,
            "crashes": len(exited),
            "exited": exited,
            "service_counters": {
                name: {key: value - counters_before.get(name, {}).get(key, 0) for key, value in after.items()}
                for name, after in counters_after.items()
            },
            "rss": {
                "interval_s": sampler.interval_s,
                "after_warmup_t": warm_t,
                "samples": samples,
                "growth": rss_growth,
                "bound": RSS_BOUND,
                "bounded": all(
                    row["ratio"] is not None and row["ratio"] <= RSS_BOUND for row in rss_growth.values()
                ),
            },
            "policy": policy_check,
            "orchestrator_state_with_ghosts": state_with_ghosts,
            "orchestrator_state_after_fuzz": state_after,
            "topics_seen": len(monitor.seen),
            "topic_violations": violations,
            "errors_from_valid_traffic": sum(
                1 for entry in monitor.errors if entry.get("source") == PROBE_SOURCE
            ),
        }
        report["totals"] = {
            "inputs": sum(row["inputs"] for row in report_topics.values()),
            "error_entries_expected": sum(row["error_entries_expected"] for row in report_topics.values()),
            "error_entries_seen": sum(row["error_entries_seen"] for row in report_topics.values()),
            "crashes": len(exited),
        }
        return report
    finally:
        for closer in (sampler, probe, fuzzer, monitor):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.stop() if not isinstance(closer, _Probe) else closer.close()
        running.stop()
        broker.stop()
        scratch.cleanup()


def write_fuzz_report(report: dict[str, Any], out: Path) -> Path:
    """docs/reliability/fuzz.json (RSS samples included)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fuzz.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def fuzz_summary(report: dict[str, Any]) -> str:
    """One line per topic: inputs tried, error entries expected / seen; then the verdicts."""
    lines = [f"{'topic':24} {'inputs':>6} {'errors exp':>10} {'errors seen':>11} {'answered':>9}"]
    for name, row in report["topics"].items():
        answered = f"{row['answered_seen']}/{row['answered_expected']}" if row["answered_expected"] else "-"
        lines.append(
            f"{name:24} {row['inputs']:>6} {row['error_entries_expected']:>10} {row['error_entries_seen']:>11} {answered:>9}"
        )
    valid = report["valid_traffic"]
    lines.append(
        f"valid traffic: {valid['correct']}/{valid['sent']} correct; crashes: {report['crashes']}; "
        f"RSS bounded (<= {report['rss']['bound']}x after warm-up): {report['rss']['bounded']}; "
        f"topic violations: {len(report['topic_violations'])}"
    )
    return "\n".join(lines)
