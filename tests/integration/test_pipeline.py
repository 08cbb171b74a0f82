"""The distributed pipeline against real Mosquitto: devices, client and orchestrator."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from distree_mqtt.client import Pipeline
from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.device.local import LocalPipeline
from distree_mqtt.device.service import DeviceService
from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.protocol import Policy
from distree_mqtt.reference import reference_bundle
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from distree_mqtt.transport import MqttTransport

_names = itertools.count()
TEST_SET = load_dataset(DataSpec()).test


@pytest.fixture
def pipeline_name() -> str:
    return f"p{next(_names)}"


class Cluster:
    """Devices and an optional orchestrator on one pipeline; stops everything it started."""

    def __init__(self, broker_url: str, pipeline: str) -> None:
        self.broker_url = broker_url
        self.pipeline = pipeline
        self.devices: list[DeviceService] = []
        self.orchestrator: OrchestratorService | None = None

    def settings(self, **sections):
        return load_settings(broker={"url": self.broker_url}, pipeline=self.pipeline, **sections)

    def add_device(self, stage: int, **options) -> DeviceService:
        device_id = f"{self.pipeline}-stage{stage}-{len(self.devices)}"
        service = DeviceService(
            self.settings(device={"stage_index": stage, "device_id": device_id, **options})
        )
        service.start()
        self.devices.append(service)
        return service

    def add_orchestrator(self, **options) -> OrchestratorService:
        self.orchestrator = OrchestratorService(self.settings(orchestrator=options))
        self.orchestrator.start()
        return self.orchestrator

    def publish_policy(self, policy: Policy) -> None:
        transport = MqttTransport(self.settings().broker, client_id=f"{self.pipeline}-admin")
        transport.start()
        transport.publish_and_wait(
            Topics(pipeline=self.pipeline).policy, policy.model_dump_json(), retain=True
        )
        transport.stop()

    def wait_for_policy(self, version: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(device.policy.version >= version for device in self.devices):
                return
            time.sleep(0.05)
        raise AssertionError(f"devices did not apply policy version {version}")

    def stop(self) -> None:
        for device in self.devices:
            device.stop()
        if self.orchestrator is not None:
            self.orchestrator.stop()


@pytest.fixture
def cluster(broker, pipeline_name) -> Iterator[Cluster]:
    running = Cluster(broker.url, pipeline_name)
    yield running
    running.stop()


def _wait_until_online(cluster: Cluster, stages: int = 3) -> None:
    """Devices forward only to stages they have seen come online."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(cluster.devices[0].peers.online_devices(stage) for stage in range(1, stages)):
            return
        time.sleep(0.05)
    raise AssertionError("devices did not see each other online")


def test_distributed_results_equal_the_in_process_pipeline(cluster) -> None:
    for stage in range(3):
        cluster.add_device(stage)
    _wait_until_online(cluster)
    policy = cluster.devices[0].policy
    local = LocalPipeline(reference_bundle("mnist"))
    indices = list(range(0, 2000, 50))
    with Pipeline(cluster.broker_url, cluster.pipeline) as client:
        futures = [client.submit(TEST_SET.images[i, 0], deadline_ms=10_000) for i in indices]
        distributed = [future.result(timeout=20) for future in futures]
    for index, remote in zip(indices, distributed, strict=True):
        expected = local.infer(TEST_SET.images[index, 0], policy)
        assert remote.outcome == "result"
        assert (remote.label, remote.exit_stage) == (expected.label, expected.exit_stage)
        assert remote.confidence == pytest.approx(expected.confidence, abs=1e-5)
        assert [hop.stage_index for hop in remote.hops] == list(range(remote.exit_stage + 1))
    accuracy = sum(r.label == TEST_SET.labels[i] for i, r in zip(indices, distributed, strict=True)) / len(
        indices
    )
    assert accuracy >= 0.95


def test_two_replicas_of_a_stage_share_the_work(cluster) -> None:
    cluster.add_device(0)
    replicas = [cluster.add_device(1), cluster.add_device(1)]
    cluster.add_device(2)
    _wait_until_online(cluster)
    cluster.publish_policy(Policy(version=7, mode="no-exit", thresholds=[None, None]))
    cluster.wait_for_policy(7)
    with Pipeline(cluster.broker_url, cluster.pipeline) as client:
        results = [
            f.result(timeout=20) for f in [client.submit(TEST_SET.images[i, 0], 10_000) for i in range(60)]
        ]
    assert all(result.exit_stage == 2 for result in results)
    shares = [replica.counters.processed for replica in replicas]
    assert sum(shares) == 60 and min(shares) >= 10, shares


def test_policy_changes_through_the_orchestrator_take_effect(cluster) -> None:
    for stage in range(3):
        cluster.add_device(stage)
    orchestrator = cluster.add_orchestrator(mode="static")
    _wait_until_online(cluster)
    admin = MqttTransport(cluster.settings().broker, client_id=f"{cluster.pipeline}-ctl")
    admin.start()
    topics = Topics(pipeline=cluster.pipeline)
    try:
        with Pipeline(cluster.broker_url, cluster.pipeline) as client:
            for mode, stage in (("no-exit", 2), ("static-zero", 0)):
                version = orchestrator.policy.version
                if mode == "no-exit":
                    admin.publish_and_wait(topics.control_set("mode"), "no-exit")
                else:
                    admin.publish_and_wait(topics.control_set("mode"), "static")
                    version += 1
                    admin.publish_and_wait(topics.control_set("static_thresholds"), "[0.0, 0.0]")
                cluster.wait_for_policy(version + 1)
                results = [
                    f.result(timeout=20)
                    for f in [client.submit(TEST_SET.images[i, 0], 10_000) for i in range(10)]
                ]
                assert {result.exit_stage for result in results} == {stage}, mode
                assert {result.policy_version for result in results} == {orchestrator.policy.version}
            admin.publish_and_wait(topics.control_set("latency_target_ms"), "-5")
            time.sleep(0.3)
            assert orchestrator.options.latency_target_ms > 0
    finally:
        admin.stop()


def test_a_request_past_its_deadline_is_answered_early(cluster) -> None:
    for stage in range(3):
        cluster.add_device(stage)
    _wait_until_online(cluster)
    cluster.publish_policy(Policy(version=3, mode="static", thresholds=[None, None]))
    cluster.wait_for_policy(3)
    with Pipeline(cluster.broker_url, cluster.pipeline) as client:
        result = client.submit(TEST_SET.images[0, 0], deadline_ms=1).result(timeout=10)
    assert result.outcome == "degraded" and result.reason == "deadline"
    assert result.exit_stage == 0


def test_a_stopped_device_makes_the_previous_stage_answer_degraded(cluster) -> None:
    for stage in range(3):
        cluster.add_device(stage)
    _wait_until_online(cluster)
    cluster.publish_policy(Policy(version=5, mode="no-exit", thresholds=[None, None]))
    cluster.wait_for_policy(5)
    last = cluster.devices.pop()
    last.stop()
    deadline = time.monotonic() + 5
    while cluster.devices[1].peers.online_devices(2) and time.monotonic() < deadline:
        time.sleep(0.05)
    with Pipeline(cluster.broker_url, cluster.pipeline) as client:
        results = [
            f.result(timeout=20) for f in [client.submit(TEST_SET.images[i, 0], 10_000) for i in range(10)]
        ]
    assert all(
        r.outcome == "degraded" and r.reason == "next-stage-offline" and r.exit_stage == 1 for r in results
    )
    assert sum(r.label == TEST_SET.labels[i] for i, r in enumerate(results)) >= 8


def test_results_also_reach_a_reply_topic_inside_the_namespace_only(cluster) -> None:
    import threading

    from distree_mqtt.transport import Message

    for stage in range(3):
        cluster.add_device(stage)
    _wait_until_online(cluster)
    received: list[Message] = []
    arrived = threading.Event()
    listener = MqttTransport(cluster.settings().broker, client_id=f"{cluster.pipeline}-listener")
    listener.subscribe(f"distree/{cluster.pipeline}/#", lambda m: (received.append(m), arrived.set()))
    listener.start()
    try:
        with Pipeline(cluster.broker_url, cluster.pipeline) as client:
            inside = client.reply_topic("automation/42")
            client.submit(TEST_SET.images[0, 0], 10_000, reply_to=inside).result(timeout=10)
            outside = f"distree/{cluster.pipeline}/control/policy"
            client.submit(TEST_SET.images[1, 0], 10_000, reply_to=outside).result(timeout=10)
        time.sleep(0.5)
    finally:
        listener.stop()
    topics = [m.topic for m in received]
    assert inside in topics and inside.endswith("reply/automation%2F42")
    assert not any(m.topic == outside and b"request_id" in m.payload for m in received)


def test_infer_and_results_commands(cluster, tmp_path) -> None:
    import json
    import subprocess
    import sys

    import cv2

    for stage in range(3):
        cluster.add_device(stage)
    _wait_until_online(cluster)
    paths = []
    for index in range(3):
        path = tmp_path / f"digit{index}.png"
        cv2.imwrite(str(path), TEST_SET.images[index, 0])
        paths.append(str(path))
    common = ["--broker", cluster.broker_url, "--pipeline", cluster.pipeline]
    tail = subprocess.Popen(
        [sys.executable, "-m", "distree_mqtt.cli.main", "results", *common, "--count", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stderr is not None
    assert tail.stderr.readline().startswith("listening on "), "the results tail did not subscribe"
    done = subprocess.run(
        [sys.executable, "-m", "distree_mqtt.cli.main", "infer", *common, *paths, "--deadline-ms", "5000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == paths
    assert [line["label"] for line in lines] == [int(v) for v in TEST_SET.labels[:3]]
    tailed, _ = tail.communicate(timeout=30)
    assert len(tailed.splitlines()) == 3
