"""Typed settings for every command: defaults < config file (YAML) < DISTREE_* env < CLI flags.

Nested fields use a double underscore in the environment, e.g. DISTREE_BROKER__URL or
DISTREE_DEVICE__STAGE_INDEX. Secrets (the broker password) come from the URL, the
environment, a password file, or a systemd credential named `broker-password`, resolved in one
place (`BrokerSettings.password`) and never logged.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from distree_mqtt.camera.settings import CameraSettings
from distree_mqtt.homeassistant.settings import HomeAssistantSettings
from distree_mqtt.protocol import PolicyMode
from distree_mqtt.reference import BundlePath
from distree_mqtt.settings_files import ConfigFileError, check_known_keys, read_config_file


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"BrokerEndpoint(host={self.host!r}, port={self.port}, tls={self.tls}, username={self.username!r})"


class BrokerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "mqtt://127.0.0.1:1883",
        title="Broker URL",
        description="mqtt://[user[:password]@]host[:port], or mqtts:// for TLS (default port 8883). "
        "Prefer password_file or the `broker-password` systemd credential to a password in the URL.",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        title="MQTT protocol version",
        description="5 enables message expiry from deadlines and receive-maximum backpressure; "
        "3.1.1 for brokers without v5 (shared subscriptions then depend on the broker).",
    )
    keepalive_s: int = Field(
        10,
        ge=2,
        le=3600,
        title="Keepalive (s)",
        description="Ping interval; the broker publishes this client's Last Will after 1.5x without traffic.",
    )
    password: SecretStr | None = Field(
        None,
        title="Broker password",
        description="Inline password; never logged. Prefer password_file or a systemd credential.",
    )
    password_file: Path | None = Field(
        None,
        title="Password file",
        description="File whose first line is the broker password. Without it, $CREDENTIALS_DIRECTORY/"
        "broker-password (systemd LoadCredential=) is used when present.",
    )
    ca_file: Path | None = Field(
        None, title="CA certificate", description="PEM CA bundle to trust for mqtts:// (default: system CAs)."
    )
    cert_file: Path | None = Field(
        None, title="Client certificate", description="PEM client certificate for mutual TLS (optional)."
    )
    key_file: Path | None = Field(
        None, title="Client key", description="PEM private key of cert_file (optional)."
    )
    connect_attempts: int = Field(
        8,
        ge=1,
        le=1000,
        title="First-connect attempts",
        description="Attempts with exponential backoff before the first connect gives up; after that "
        "the client reconnects on its own forever.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(
                f"broker url must look like mqtt://host:port or mqtts://host:port, got {_redact(url)!r}"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"broker url has an invalid port: {_redact(url)!r}") from None
        return url

    def endpoint(self) -> BrokerEndpoint:
        parts = urlsplit(self.url)
        tls = parts.scheme == "mqtts"
        return BrokerEndpoint(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=self._resolve_password(parts.password),
        )

    def _resolve_password(self, from_url: str | None) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        credential = Path(credentials) / "broker-password" if credentials else None
        if credential is not None and credential.is_file():
            # The installer leaves an empty credential file so LoadCredential= never fails;
            # empty means "no password from systemd".
            secret = credential.read_text().strip()
            if secret:
                return secret
        return unquote(from_url) if from_url else None

    @property
    def redacted_url(self) -> str:
        return _redact(self.url)

    def __repr_args__(self) -> Any:  # repr() and str() of any settings never show a URL password
        for name, value in super().__repr_args__():
            yield name, (_redact(value) if name == "url" else value)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class DeviceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: BundlePath = Field(
        None,
        title="Bundle directory",
        description="Model bundle whose stage this device runs (only that stage's weights are loaded). "
        "`reference:mnist` or `reference:cifar10` names a shipped reference; default reference:mnist.",
    )
    stage_index: int = Field(
        0, ge=0, le=64, title="Stage index", description="Which stage of the bundle this device runs."
    )
    device_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        title="Device id",
        description="Unique id: status, telemetry and Home Assistant entities are keyed by it "
        "(default: <host>-stage<k>-<pid>, which changes on restart: set it on real gateways).",
    )
    group: str = Field(
        "distree",
        max_length=64,
        title="Replica group",
        description="Shared-subscription group ($share/<group>/...): replicas of one stage in one "
        "group split the work between them.",
    )
    shared_subscription: bool = Field(
        True,
        title="Shared subscription",
        description="Subscribe through $share so replicas split the work; off for brokers without it "
        "(then every replica would run every request: run one replica only).",
    )
    queue_capacity: int = Field(
        64,
        ge=1,
        le=100_000,
        title="Queue capacity",
        description="Bounded work queue; a request arriving when it is full is rejected with an answer.",
    )
    max_batch: int = Field(
        8, ge=1, le=1024, title="Micro-batch size", description="At most this many requests per stage run."
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        title="Micro-batch wait (ms)",
        description="Wait this long to fill a batch; 0 takes what is queued and never waits when idle.",
    )
    codec: str = Field(
        "int8+zstd",
        title="Feature codec",
        description="Codec of the features sent to the next stage: float32, float16, int8, int8+zlib, "
        "int8+zstd, int6+zstd (see docs/protocol.md).",
    )
    slowdown: float = Field(
        1.0,
        ge=1.0,
        le=1000,
        title="Slowdown factor",
        description="Emulate a slower CPU: stage time x this factor (testbeds of Pi-class devices).",
    )
    telemetry_interval_s: float = Field(
        1.0, gt=0, le=3600, title="Telemetry interval (s)", description="How often telemetry is published."
    )
    session_expiry_s: int = Field(
        300,
        ge=0,
        le=86_400,
        title="Session expiry (s)",
        description="How long the broker keeps this device's session (its subscription and the stage "
        "inputs it took but had not finished) while it is away; a device restarted within this time "
        "with the same device_id gets them redelivered. 0: a clean session on every connect.",
    )
    max_message_bytes: int = Field(
        4 << 20,
        ge=1024,
        title="Largest stage input (bytes)",
        description="Larger stage inputs are rejected before they are parsed.",
    )
    threads: int = Field(
        1, ge=1, le=256, title="CPU threads", description="torch CPU threads used by the stage."
    )
    whole_model: bool = Field(
        False,
        title="Whole model",
        description="Run every stage here and answer at the final exit (the one-device baseline).",
    )


class OrchestratorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: BundlePath = Field(
        None,
        title="Bundle directory",
        description="Bundle whose offline threshold profile the controller chooses from; must be the "
        "bundle the devices run. `reference:<name>` names a shipped reference; default reference:mnist.",
    )
    mode: PolicyMode = Field(
        "adaptive",
        title="Policy mode",
        description="adaptive (meet the latency target with the best accuracy), static (fixed "
        "thresholds) or no-exit (every request runs to the final exit).",
    )
    criterion: str | None = Field(
        None,
        title="Exit criterion",
        description="max_softmax, margin, entropy, ... (default: the bundle's default criterion).",
    )
    latency_target_ms: float = Field(
        500.0,
        gt=0,
        le=3_600_000,
        title="Latency target (ms)",
        description="p95 end-to-end latency the adaptive policy keeps under.",
    )
    static_thresholds: list[float | None] | None = Field(
        None,
        title="Static thresholds",
        description="One threshold per early exit for static mode; null never exits there. "
        "Unset: the bundle's operating point for the criterion.",
    )
    control_interval_s: float = Field(
        0.5, gt=0, le=60, title="Control interval (s)", description="How often thresholds are reconsidered."
    )
    window_s: float = Field(
        5.0,
        gt=0,
        le=600,
        title="Observation window (s)",
        description="Sliding window of observed latency, arrival rate and exit rates.",
    )
    headroom: float = Field(
        0.8,
        gt=0,
        lt=1,
        title="Headroom",
        description="Move to a slower, more accurate setting only if its predicted p95 stays under "
        "target x headroom (hysteresis against oscillation).",
    )


class ClientSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        default_factory=lambda: f"client-{socket.gethostname()}-{os.getpid()}",
        max_length=128,
        title="Source id",
        description="Names this client in requests and its results topic (escaped as a topic level).",
    )
    deadline_ms: float = Field(
        2000.0,
        gt=0,
        le=3_600_000,
        title="Deadline (ms)",
        description="Default per-request deadline; devices answer early rather than miss it.",
    )
    grace_ms: float = Field(
        1000.0,
        ge=0,
        le=600_000,
        title="Grace (ms)",
        description="Wait this long past the deadline for an answer before reporting a timeout.",
    )
    image_codec: Literal["png", "jpeg", "raw"] = Field(
        "png", title="Image codec", description="How images are sent to stage 0 (png is lossless)."
    )
    session_expiry_s: int = Field(
        120,
        ge=0,
        le=86_400,
        title="Session expiry (s)",
        description="How long the broker keeps results for this client while it is disconnected "
        "(a broker restart, a Wi-Fi drop); 0: a clean session on every connect.",
    )


class DistreeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTREE_", env_nested_delimiter="__", extra="forbid")

    role: Literal["device", "orchestrator", "camera"] | None = Field(
        None,
        title="Role",
        description="Which daemon this file configures; a daemon refuses a file written for another, "
        "and `distree config check` shows what the file would run.",
    )
    broker: BrokerSettings = Field(
        default_factory=BrokerSettings, title="Broker", description="How to reach the MQTT broker."
    )
    topic_prefix: str = Field(
        "distree", title="Topic prefix", description="First topic level of every distree topic."
    )
    pipeline: str = Field(
        "default",
        title="Pipeline",
        description="Pipeline name, the second topic level; pipelines on one broker are independent.",
    )
    device: DeviceSettings = Field(
        default_factory=DeviceSettings, title="Device", description="`distree device`: one stage."
    )
    orchestrator: OrchestratorSettings = Field(
        default_factory=OrchestratorSettings,
        title="Orchestrator",
        description="`distree orchestrator`: adapts exit thresholds to the latency target.",
    )
    client: ClientSettings = Field(
        default_factory=ClientSettings,
        title="Client",
        description="`distree infer`, the Python client and the camera's requests.",
    )
    camera: CameraSettings = Field(
        default_factory=CameraSettings,
        title="Camera",
        description="`distree camera`: one camera's motion-triggered requests, state and events.",
    )
    homeassistant: HomeAssistantSettings = Field(
        default_factory=HomeAssistantSettings,
        title="Home Assistant",
        description="MQTT discovery of the pipeline, its devices and cameras.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, *cls._file_sources(settings_cls))

    @classmethod
    def _file_sources(cls, settings_cls: type[BaseSettings]) -> tuple[PydanticBaseSettingsSource, ...]:
        return ()


Role = Literal["device", "orchestrator", "camera"]


def load_settings(
    config_file: Path | None = None, *, command: Role | None = None, **overrides: Any
) -> DistreeSettings:
    """Settings from the config file (YAML, or TOML), the environment and explicit overrides
    (highest). With `command`, a file whose `role` names another daemon is refused."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_values = read_config_file(config_file)
        check_known_keys(DistreeSettings, file_values, config_file)

    class _Configured(DistreeSettings):
        @classmethod
        def _file_sources(cls, settings_cls: type[BaseSettings]) -> tuple[PydanticBaseSettingsSource, ...]:
            return (InitSettingsSource(settings_cls, init_kwargs=file_values),)

    try:
        settings = _Configured(**_drop_none(overrides))
    except ValidationError as error:
        raise _located(error, config_file, file_values) from None
    if command is not None and settings.role is not None and settings.role != command:
        where = f"{config_file}: " if config_file else ""
        raise ConfigFileError(f"{where}this file configures a {settings.role}, not a {command}")
    return settings


def _located(error: ValidationError, config_file: Path | None, file_values: dict[str, Any]) -> ValueError:
    """One line naming the setting, and the file when the bad value came from it."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    node: Any = file_values
    for part in loc:
        node = node.get(part) if isinstance(node, dict) else None
    origin = f"{config_file}: " if config_file is not None and node is not None else ""
    source = "" if origin else " (from DISTREE_* environment or command-line flags)"
    return ConfigFileError(f"{origin}invalid setting '{'.'.join(loc)}'{source}: {first['msg']}")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                cleaned[key] = value
        elif value is not None:
            cleaned[key] = value
    return cleaned
