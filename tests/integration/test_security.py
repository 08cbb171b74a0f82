"""configs/mosquitto against a real Mosquitto: TLS, passwords and one ACL role per component.

The broker runs the shipped mosquitto.conf and acl, with only the file paths and the port
substituted, and the certificates and passwords its scripts generate. Every denial is checked
beside an allowed action of the same client, so an ACL that denies everything fails too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from distree_mqtt.broker import mosquitto_available
from distree_mqtt.broker.process import BrokerProcess
from distree_mqtt.settings import BrokerSettings, load_settings
from distree_mqtt.transport import MqttTransport
from tests.cli_process import run_distree

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "mosquitto"
NOT_AUTHORIZED = 135  # MQTT 5 reason code of a refused publish or connection
SETTLE_S = 0.5  # after an allowed message has arrived, how long a denied one may still trail it


def _binary(name: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/bin") / name, Path("/usr/sbin") / name) if p.exists()), None
    )
    if path is None:
        pytest.skip(
            f"{name} is not installed (Debian: apt-get install openssl mosquitto); .ci/run installs it"
        )
    return path


class SecureMosquitto(BrokerProcess):
    """The shipped configs/mosquitto/mosquitto.conf with its paths moved into `workdir`."""

    name = "mosquitto (configs/mosquitto)"

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir
        self.log_path = workdir / "mosquitto.log"

    def derived_config(self) -> str:
        text = (CONFIG_DIR / "mosquitto.conf").read_text()
        for shipped, here in (
            ("/etc/mosquitto/distree/", f"{self.workdir}/"),
            ("/var/lib/mosquitto/", f"{self.workdir}/data/"),
            ("\nlistener 8883\n", f"\nlistener {self.port} 127.0.0.1\n"),
        ):
            assert shipped in text, f"mosquitto.conf no longer has {shipped!r}: update this test"
            text = text.replace(shipped, here)
        if os.geteuid() == 0:
            # Started as root, Mosquitto becomes user `mosquitto`, who cannot read tmp_path.
            text += "user root\n"
        return text

    def _spawn(self) -> subprocess.Popen[bytes]:
        (self.workdir / "data").mkdir(exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(self.derived_config())
        log = self.log_path.open("ab")
        binary = mosquitto_available()
        assert binary is not None
        return subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)

    def _exit_reason(self) -> str:
        return self.log_path.read_text()[-800:]


@dataclass
class Deployment:
    broker: SecureMosquitto
    workdir: Path

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def credential(self, user: str) -> Path:
        return self.workdir / "credentials" / user

    def password(self, user: str) -> str:
        return self.credential(user).read_text().strip()

    def passwords(self) -> list[str]:
        return [path.read_text().strip() for path in sorted((self.workdir / "credentials").iterdir())]


def _secure_workdir(tmp_path_factory: pytest.TempPathFactory, name: str, *cert_args: str) -> Path:
    """Certificates, passwords and the ACL for a broker, made by the shipped scripts; a second
    CA ("rogue") signs the same names for clients the broker must not trust."""
    if mosquitto_available() is None:
        pytest.fail("integration tests need mosquitto (apt-get install mosquitto); .ci/run installs it")
    _binary("openssl")
    _binary("mosquitto_passwd")
    workdir = tmp_path_factory.mktemp(name)
    for command in (
        [str(CONFIG_DIR / "make-certs.sh"), str(workdir), "127.0.0.1", *cert_args],
        [str(CONFIG_DIR / "make-certs.sh"), str(workdir / "rogue"), "127.0.0.1", *cert_args],
        [str(CONFIG_DIR / "make-passwords.sh"), str(workdir)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    shutil.copy(CONFIG_DIR / "acl", workdir / "acl")
    private = [workdir / "passwd", *workdir.glob("*.key"), *(workdir / "credentials").iterdir()]
    for path in private:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    return workdir


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with SecureMosquitto(_secure_workdir(tmp_path_factory, "secure-broker", "localhost")) as broker:
        yield Deployment(broker, broker.workdir)


# -- a plain paho client that reports reason codes ----------------------------------------
@dataclass
class Probe:
    client: paho.Client
    connack: ReasonCode | None = None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    acks: dict[int, ReasonCode] = field(default_factory=dict)
    connected: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> ReasonCode:
        """QoS 1 under MQTT 5: the broker's PUBACK says whether the ACL let it through."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks:
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.01)
        return self.acks[info.mid]

    def subscribe(self, *topic_filters: str) -> None:
        for topic_filter in topic_filters:
            self.client.subscribe(topic_filter, qos=1)
        time.sleep(0.2)

    def received(self, prefix: str = "") -> list[tuple[str, bytes]]:
        with self.lock:
            return [(topic, payload) for topic, payload in self.messages if topic.startswith(prefix)]

    def wait_for(self, topic: str, timeout_s: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [payload for received, payload in self.received() if received == topic]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"nothing arrived on {topic}")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connect(
    deployment: Deployment,
    user: str | None,
    password: str | None = None,
    ca_file: Path | None = None,
    client_id: str | None = None,
) -> Probe:
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"probe-{user}-{time.monotonic_ns()}",
        protocol=paho.MQTTv5,
    )
    probe = Probe(client)
    if user is not None:
        client.username_pw_set(user, deployment.password(user) if password is None else password)
    client.tls_set_context(ssl.create_default_context(cafile=str(ca_file or deployment.ca_file)))

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        probe.connack = reason_code
        probe.connected.set()

    def on_message(_client, _userdata, message) -> None:  # type: ignore[no-untyped-def]
        with probe.lock:
            probe.messages.append((message.topic, bytes(message.payload)))

    def on_publish(_client, _userdata, mid, reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        probe.acks[mid] = reason_code

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_publish = on_publish
    client.connect("127.0.0.1", deployment.port)
    client.loop_start()
    assert probe.connected.wait(5), "no CONNACK"
    return probe


@pytest.fixture
def probes(deployment: Deployment) -> Iterator[dict[str, Probe]]:
    """Connected clients by username, all stopped at the end."""
    opened: dict[str, Probe] = {}

    class Opener(dict[str, Probe]):
        def __missing__(self, user: str) -> Probe:
            probe = _connect(deployment, user)
            assert probe.connack is not None and not probe.connack.is_failure, probe.connack
            opened[user] = self[user] = probe
            return probe

    yield Opener()
    for probe in opened.values():
        probe.stop()


# -- authentication and TLS ------------------------------------------------------------------
def test_anonymous_clients_and_wrong_passwords_are_refused(deployment: Deployment) -> None:
    for user, password in ((None, None), ("home-client", "not-the-password"), ("nobody", "x" * 40)):
        probe = _connect(deployment, user, password)
        try:
            assert probe.connack is not None and probe.connack.is_failure, (user, probe.connack)
        finally:
            probe.stop()
    allowed = _connect(deployment, "home-client")  # the same client with its own password
    assert allowed.connack is not None and not allowed.connack.is_failure
    allowed.stop()


def test_a_client_that_does_not_trust_the_ca_cannot_connect(deployment: Deployment) -> None:
    user = "home-client"
    url = f"mqtts://{user}@127.0.0.1:{deployment.port}"
    for ca_file in (None, deployment.workdir / "rogue" / "ca.crt"):  # system CAs, another CA
        settings = BrokerSettings(
            url=url, ca_file=ca_file, password_file=deployment.credential(user), connect_attempts=1
        )
        transport = MqttTransport(settings, client_id=f"untrusting-{time.monotonic_ns()}")
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            transport.start(wait_s=5)
    plain = BrokerSettings(
        url=f"mqtt://{user}@127.0.0.1:{deployment.port}",
        password_file=deployment.credential(user),
        connect_attempts=1,
    )
    with pytest.raises(ConnectionError):  # no TLS on the TLS port
        MqttTransport(plain, client_id=f"plain-{time.monotonic_ns()}").start(wait_s=3)
    trusting = BrokerSettings(
        url=url, ca_file=deployment.ca_file, password_file=deployment.credential(user), connect_attempts=1
    )
    transport = MqttTransport(trusting, client_id=f"trusting-{time.monotonic_ns()}")
    transport.start(wait_s=5)
    assert transport.connected
    transport.stop()


# -- mutual TLS ------------------------------------------------------------------------------
class MutualTlsMosquitto(SecureMosquitto):
    """The shipped config with `require_certificate true`: every client shows a certificate
    the deployment's CA signed, on top of its password."""

    name = "mosquitto (configs/mosquitto, mutual TLS)"

    def derived_config(self) -> str:
        text = super().derived_config()
        assert "\nrequire_certificate false\n" in text, "mosquitto.conf changed: update this test"
        return text.replace("\nrequire_certificate false\n", "\nrequire_certificate true\n")


@pytest.fixture(scope="module")
def mutual_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = _secure_workdir(tmp_path_factory, "mutual-tls-broker", "--client", "doorbell-stage0")
    with MutualTlsMosquitto(workdir) as broker:
        yield Deployment(broker, workdir)


def test_mutual_tls_admits_only_clients_with_a_certificate_the_ca_signed(mutual_tls: Deployment) -> None:
    user = "doorbell-stage0"

    def settings(certificates: Path | None) -> BrokerSettings:
        files = {}
        if certificates is not None:
            files = {"cert_file": certificates / f"{user}.crt", "key_file": certificates / f"{user}.key"}
        return BrokerSettings(
            url=f"mqtts://{user}@127.0.0.1:{mutual_tls.port}",
            ca_file=mutual_tls.ca_file,
            password_file=mutual_tls.credential(user),
            connect_attempts=1,
            **files,
        )

    # The right password is not enough: no certificate, or one from another CA, is refused.
    for certificates in (None, mutual_tls.workdir / "rogue"):
        transport = MqttTransport(settings(certificates), client_id=f"refused-{time.monotonic_ns()}")
        with pytest.raises(ConnectionError):
            transport.start(wait_s=5)
        transport.stop()

    # With its own certificate the device connects and a message makes the round trip.
    received: list[bytes] = []
    arrived = threading.Event()
    transport = MqttTransport(settings(mutual_tls.workdir), client_id=f"admitted-{time.monotonic_ns()}")
    transport.subscribe("distree/home/status/+", lambda m: (received.append(m.payload), arrived.set()))
    transport.start(wait_s=5)
    try:
        payload = f"online-{time.monotonic_ns()}"
        transport.publish_and_wait(f"distree/home/status/{user}", payload)
        assert arrived.wait(5) and payload.encode() in received
    finally:
        transport.stop()


def test_unreadable_tls_files_are_one_line_errors_naming_the_file(mutual_tls: Deployment) -> None:
    url = f"mqtts://doorbell-stage0@127.0.0.1:{mutual_tls.port}"
    not_pem = mutual_tls.workdir / "acl"
    encrypted = mutual_tls.workdir / "encrypted.key"
    plain_key = str(mutual_tls.workdir / "doorbell-stage0.key")
    done = subprocess.run(
        ["openssl", "ec", "-in", plain_key, "-out", str(encrypted), "-aes256", "-passout", "pass:secret"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    cases = (
        ({"ca_file": mutual_tls.workdir / "missing-ca.crt"}, "broker.ca_file"),
        ({"cert_file": mutual_tls.workdir / "missing.crt"}, "broker.cert_file"),
        ({"cert_file": not_pem}, "broker.cert_file"),
        (  # a certificate with the wrong key
            {
                "cert_file": mutual_tls.workdir / "doorbell-stage0.crt",
                "key_file": mutual_tls.workdir / "server.key",
            },
            "broker.cert_file",
        ),
        ({"key_file": mutual_tls.workdir / "doorbell-stage0.key"}, "broker.key_file"),
        ({"cert_file": mutual_tls.workdir / "doorbell-stage0.crt", "key_file": encrypted}, "encrypted"),
    )
    for files, setting in cases:
        with pytest.raises(ValueError, match=setting) as raised:
            MqttTransport(BrokerSettings(url=url, **files), client_id="unused")
        assert "\n" not in str(raised.value)
        assert any(str(path) in str(raised.value) for path in files.values()), raised.value


# -- authorisation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    topic: str
    payload: bytes
    reason: ReasonCode


def _try(sender: Probe, topic: str, payload: str = "", retain: bool = False) -> Attempt:
    """Publish a payload unique to this attempt; the PUBACK says what the broker did."""
    unique = f"{payload}#{time.monotonic_ns()}".encode()
    return Attempt(topic, unique, sender.publish(topic, unique, retain=retain))


def _assert_delivered(watcher: Probe, attempts: list[Attempt]) -> None:
    for attempt in attempts:
        assert attempt.reason.value == 0, (attempt.topic, attempt.reason)
        assert watcher.wait_for(attempt.topic) == attempt.payload


def _assert_refused_and_unseen(watcher: Probe, attempts: list[Attempt]) -> None:
    time.sleep(SETTLE_S)
    for attempt in attempts:
        assert attempt.reason.value == NOT_AUTHORIZED, (attempt.topic, attempt.reason)
        assert (attempt.topic, attempt.payload) not in watcher.received(), f"{attempt.topic} got through"


def test_cameras_and_clients_cannot_publish_policy_or_control_commands(probes) -> None:
    watcher = probes["home-operator"]
    watcher.subscribe("distree/home/#")
    refused = []
    for user in ("doorbell-camera", "home-client"):
        sender = probes[user]
        _assert_delivered(watcher, [_try(sender, "distree/home/stage/0/in", user)])  # what they may do
        refused.append(_try(sender, "distree/home/control/policy", "{}", retain=True))
        refused.append(_try(sender, "distree/home/control/set/mode", "static"))
    # Home Assistant sets the controls, but never writes the policy itself.
    home_assistant = probes["homeassistant"]
    _assert_delivered(watcher, [_try(home_assistant, "distree/home/control/set/latency_target_ms", "400")])
    refused.append(_try(home_assistant, "distree/home/control/policy", "{}", retain=True))
    _assert_refused_and_unseen(watcher, refused)


def test_a_device_cannot_publish_policy_or_speak_for_another_device(probes) -> None:
    watcher = probes["home-operator"]
    watcher.subscribe("distree/home/#")
    device = probes["doorbell-stage0"]
    allowed = ("distree/home/stage/1/in", "distree/home/telemetry/doorbell-stage0")
    _assert_delivered(watcher, [_try(device, topic, "ok") for topic in allowed])
    refused = [
        _try(device, topic)
        for topic in (
            "distree/home/control/policy",
            "distree/home/control/set/mode",
            "distree/home/telemetry/minipc-stage1",
            "distree/home/stage/0/in",  # only clients, cameras and Home Assistant feed stage 0
            "distree/home/stage/2/in",  # stage 0 feeds stage 1 only
        )
    ]
    _assert_refused_and_unseen(watcher, refused)
    # The orchestrator may: its retained policy reaches the devices.
    orchestrator = probes["home-orchestrator"]
    policy = _try(orchestrator, "distree/home/control/policy", "policy", retain=True)
    assert policy.reason.value == 0
    device.subscribe("distree/home/control/policy")
    assert device.wait_for("distree/home/control/policy") == policy.payload
    assert orchestrator.publish("distree/home/control/policy", b"", retain=True).value == 0  # clear it


def test_one_pipeline_cannot_reach_another(probes) -> None:
    home = probes["home-operator"]
    home.subscribe("distree/home/#")
    outsiders = {user: probes[user] for user in ("factory-operator", "line1-stage0", "factory-client")}
    outsiders["factory-operator"].subscribe("distree/#", "#")
    outsiders["line1-stage0"].subscribe(
        "$share/distree/distree/home/stage/0/in", "distree/home/stage/0/in", "distree/home/control/policy"
    )
    outsiders["factory-client"].subscribe("distree/home/results/+", "distree/home/reply/#")
    allowed = [
        _try(probes["home-orchestrator"], "distree/home/control/policy", "policy", retain=True),
        _try(probes["home-client"], "distree/home/stage/0/in", "image"),
        _try(probes["doorbell-stage0"], "distree/home/results/home-client", "result"),
    ]
    _assert_delivered(home, allowed)
    # Writing into the other pipeline is refused as well.
    refused = [
        _try(outsiders["factory-client"], "distree/home/stage/0/in"),
        _try(outsiders["line1-stage0"], "distree/home/status/line1-stage0", "online"),
        _try(outsiders["factory-operator"], "distree/home/control/set/mode", "static"),
    ]
    _assert_refused_and_unseen(home, refused)
    for user, outsider in outsiders.items():
        assert not outsider.received("distree/home/"), f"{user} read pipeline home"
    # ... while the factory operator does read its own pipeline.
    _assert_delivered(
        outsiders["factory-operator"], [_try(probes["factory-client"], "distree/factory/stage/0/in", "image")]
    )
    assert probes["home-orchestrator"].publish("distree/home/control/policy", b"", retain=True).value == 0


def test_discovery_writes_stay_within_each_components_own_home_assistant_devices(probes) -> None:
    home_assistant = probes["homeassistant"]
    home_assistant.subscribe("homeassistant/#")
    allowed = [
        _try(probes["home-orchestrator"], "homeassistant/device/distree_home/config", "{}"),
        _try(probes["home-orchestrator"], "homeassistant/device/distree_home_minipc-stage1/config", "{}"),
        _try(probes["home-orchestrator"], "homeassistant/sensor/distree_home/latency/config", "{}"),
        _try(probes["doorbell-camera"], "homeassistant/device/distree_home_camera_doorbell/config", "{}"),
        _try(probes["line1-camera"], "homeassistant/image/distree_factory_camera_line-1/snapshot/config"),
    ]
    _assert_delivered(home_assistant, allowed)
    refused = [
        # another pipeline's devices
        _try(probes["factory-orchestrator"], "homeassistant/device/distree_home/config", "{}"),
        _try(probes["line1-camera"], "homeassistant/device/distree_home_camera_doorbell/config", "{}"),
        # within the pipeline: a camera is not the orchestrator, nor another camera
        _try(probes["doorbell-camera"], "homeassistant/device/distree_home/config", "{}"),
        _try(probes["line1-camera"], "homeassistant/device/distree_factory_camera_line-2/config", "{}"),
        # a device the orchestrator does not know, and other integrations' devices
        _try(probes["home-orchestrator"], "homeassistant/device/distree_home_intruder/config", "{}"),
        _try(probes["home-orchestrator"], "homeassistant/light/zigbee_lamp/light/config", "{}"),
        _try(probes["doorbell-camera"], "homeassistant/device/zigbee_lamp/config", "{}"),
        # and nobody but Home Assistant announces Home Assistant
        _try(probes["home-orchestrator"], "homeassistant/status", "online"),
    ]
    _assert_refused_and_unseen(home_assistant, refused)


# -- the real daemons with role credentials --------------------------------------------------
def _write_settings(path: Path, deployment: Deployment, user: str, body: str, password_file: bool) -> Path:
    lines = [
        "pipeline: home",
        "broker:",
        f"  url: mqtts://{user}@127.0.0.1:{deployment.port}",
        f"  ca_file: {deployment.ca_file}",
        "  connect_attempts: 3",
    ]
    if password_file:
        lines.append(f"  password_file: {deployment.credential(user)}")
    path.write_text("\n".join(lines) + "\n" + body)
    return path


class Daemons:
    """`distree ...` child processes with their output in files; always stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "distree_mqtt.cli.main", "--debug", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.processes.append((name, process))

    def check_running(self) -> None:
        for name, process in self.processes:
            assert process.poll() is None, f"{name} exited: {self.output(name)[-800:]}"

    def output(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_every_role_does_its_job_over_tls_and_no_password_leaks(
    deployment: Deployment, probes, tmp_path: Path
) -> None:
    import cv2

    from distree_mqtt.data import DataSpec, load_dataset

    operator = probes["home-operator"]
    operator.subscribe("distree/home/#")
    home_assistant = probes["homeassistant"]
    home_assistant.subscribe("homeassistant/#", "distree/home/orchestrator/state", "distree/home/status/+")
    daemons = Daemons(tmp_path)
    devices = ("doorbell-stage0", "minipc-stage1", "minipc-stage2")
    try:
        for stage, user in enumerate(devices):
            body = f"role: device\ndevice:\n  stage_index: {stage}\n  device_id: {user}\n"
            if stage == 1:  # one device names its password file, the others get a systemd credential
                config = _write_settings(
                    tmp_path / f"{user}.yaml", deployment, user, body, password_file=True
                )
                daemons.start(user, ["device", "--config", str(config)])
            else:
                credentials = tmp_path / f"credentials-{user}"
                credentials.mkdir(mode=0o700)
                shutil.copy(deployment.credential(user), credentials / "broker-password")
                config = _write_settings(
                    tmp_path / f"{user}.yaml", deployment, user, body, password_file=False
                )
                daemons.start(
                    user, ["device", "--config", str(config)], {"CREDENTIALS_DIRECTORY": str(credentials)}
                )
        body = "role: orchestrator\norchestrator:\n  mode: no-exit\n"
        config = _write_settings(tmp_path / "orchestrator.yaml", deployment, "home-orchestrator", body, True)
        daemons.start("orchestrator", ["orchestrator", "--config", str(config)])

        # Ready: the retained policy reached every device (their telemetry carries its version).
        policy = json.loads(operator.wait_for("distree/home/control/policy", timeout_s=60))
        assert policy["mode"] == "no-exit"
        deadline = time.monotonic() + 60
        while True:
            daemons.check_running()
            versions = {}
            for topic, payload in operator.received("distree/home/telemetry/"):
                versions[topic.rsplit("/", 1)[-1]] = json.loads(payload)["policy_version"]
            if all(versions.get(user) == policy["version"] for user in devices):
                break
            assert time.monotonic() < deadline, f"devices did not apply the policy: {versions}"
            time.sleep(0.2)

        image = tmp_path / "digit.png"
        test_set = load_dataset(DataSpec()).test
        cv2.imwrite(str(image), test_set.images[0, 0])
        client = _write_settings(
            tmp_path / "client.yaml", deployment, "home-client", "client:\n  source: home-client\n", False
        )
        done = subprocess.run(
            [sys.executable, "-m", "distree_mqtt.cli.main", "infer", "--config", str(client), str(image)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DISTREE_BROKER__PASSWORD_FILE": str(deployment.credential("home-client"))},
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        # no-exit: the request crossed all three devices, so every forward was allowed.
        assert answer["outcome"] == "result" and answer["exit_stage"] == 2, answer
        assert answer["label"] == int(test_set.labels[0])

        # Home Assistant sees the orchestrator's discovery, state and availability.
        assert json.loads(home_assistant.wait_for("homeassistant/device/distree_home/config"))["cmps"]
        home_assistant.wait_for("distree/home/orchestrator/state")
        assert home_assistant.wait_for("distree/home/status/orchestrator") == b"online"
        for user in devices:
            assert operator.wait_for(f"distree/home/status/{user}") == b"online"
            assert json.loads(operator.wait_for(f"distree/home/devices/{user}"))["device"] == user
        assert not operator.received("distree/home/errors"), operator.received("distree/home/errors")
    finally:
        daemons.stop()
        logs = {name: daemons.output(name) for name, _ in daemons.processes}
    logs["infer"] = done.stdout + done.stderr
    logs["mosquitto"] = deployment.broker.log_path.read_text(errors="replace")
    assert "stopped" in logs["mosquitto"] or "connected" in logs["mosquitto"]
    payloads = [payload for _, payload in operator.received() + home_assistant.received()]
    assert len(payloads) > 10
    for password in deployment.passwords():
        for name, text in logs.items():
            assert password not in text, f"a password appears in the output of {name}"
        assert not [payload for payload in payloads if password.encode() in payload], (
            "a password was published"
        )


# -- secrets in settings and errors ----------------------------------------------------------
def test_passwords_stay_out_of_reprs_and_error_lines(deployment: Deployment, tmp_path: Path) -> None:
    secret_in_url, secret_inline = "s3cret-in-url", "s3cret-inline"
    settings = BrokerSettings(url=f"mqtts://user:{secret_in_url}@127.0.0.1:1", password=secret_inline)
    endpoint = settings.endpoint()
    assert endpoint.password == secret_inline  # resolved, and usable
    whole = load_settings(broker={"url": settings.url, "password": secret_inline})
    texts = (repr(settings), str(settings), repr(endpoint), str(endpoint), repr(whole), str(whole))
    for text in (*texts, settings.redacted_url):
        assert secret_in_url not in text and secret_inline not in text, text
    assert settings.redacted_url == "mqtts://user:***@127.0.0.1:1"

    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    for url in (f"mqtts://user:{secret_in_url}@127.0.0.1:1", f"mqtts://user:{secret_in_url}@127.0.0.1:99999"):
        done = subprocess.run(
            [sys.executable, "-m", "distree_mqtt.cli.main", "infer", "--broker", url, str(image)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DISTREE_BROKER__CONNECT_ATTEMPTS": "1"},
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("distree infer: error:") and done.stderr.count("\n") == 1, done.stderr
        assert secret_in_url not in done.stderr + done.stdout

    # A wrong password for a real user: refused, and the error names neither password.
    wrong = "wrong-" + secret_inline
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "distree_mqtt.cli.main",
            "infer",
            "--broker",
            f"mqtts://home-client:{wrong}@127.0.0.1:{deployment.port}",
            str(image),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DISTREE_BROKER__CA_FILE": str(deployment.ca_file),
            "DISTREE_BROKER__CONNECT_ATTEMPTS": "1",
        },
    )
    assert done.returncode == 2 and "did not accept the connection" in done.stderr, done.stderr
    assert wrong not in done.stderr + done.stdout
    assert deployment.password("home-client") not in done.stderr + done.stdout


def test_ha_remove_without_read_access_is_one_line_not_a_silent_partial_removal(
    deployment: Deployment, tmp_path: Path
) -> None:
    # The orchestrator may write its own configs but not read the others': `remove` cannot
    # learn what is retained, so it refuses instead of clearing only what it can guess.
    settings = _write_settings(tmp_path / "o.yaml", deployment, "home-orchestrator", "", password_file=True)
    done = run_distree("ha", "remove", "--config", str(settings), "--wait-s", "1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "needs read and write access" in done.stderr, done.stderr
