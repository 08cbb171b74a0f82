"""Typed settings for every command: defaults < config file (TOML) < DISTREE_* env < CLI flags.

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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from distree_mqtt.protocol import PolicyMode


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

    url: str = Field("mqtt://127.0.0.1:1883", title="mqtt://[user[:password]@]host[:port] or mqtts://...")
    protocol: Literal["5", "3.1.1"] = Field("5", title="MQTT protocol version")
    keepalive_s: int = Field(10, ge=2, le=3600, title="Keepalive; the broker fires the Last Will after 1.5x")
    password: SecretStr | None = Field(None, title="Broker password (prefer password_file)")
    password_file: Path | None = Field(None, title="File holding the broker password")
    ca_file: Path | None = Field(None, title="CA certificate to trust (mqtts)")
    cert_file: Path | None = Field(None, title="Client certificate (mqtts, optional)")
    key_file: Path | None = Field(None, title="Client key (mqtts, optional)")
    connect_attempts: int = Field(8, ge=1, le=1000, title="First-connect attempts before giving up")

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
        if credentials and (Path(credentials) / "broker-password").is_file():
            return (Path(credentials) / "broker-password").read_text().strip()
        return unquote(from_url) if from_url else None

    @property
    def redacted_url(self) -> str:
        return _redact(self.url)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class DeviceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: Path | None = Field(None, title="Bundle directory (default: the shipped MNIST reference)")
    stage_index: int = Field(0, ge=0, le=64, title="Which stage this device runs")
    device_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,64}$", title="Unique id (default: <host>-stage<k>-<pid>)"
    )
    group: str = Field("distree", max_length=64, title="Shared-subscription group of the stage's replicas")
    shared_subscription: bool = Field(True, title="Subscribe through $share so replicas split the work")
    queue_capacity: int = Field(
        64, ge=1, le=100_000, title="Bounded work queue; beyond it requests are rejected"
    )
    max_batch: int = Field(8, ge=1, le=1024, title="Micro-batch: at most this many requests per run")
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        title="Micro-batch: wait this long to fill a batch (0: take what is queued, never wait when idle)",
    )
    codec: str = Field("int8+zstd", title="Feature codec for the next hop (see docs/protocol.md)")
    slowdown: float = Field(1.0, ge=1.0, le=1000, title="Emulate a slower CPU: stage time x this factor")
    telemetry_interval_s: float = Field(1.0, gt=0, le=3600)
    max_message_bytes: int = Field(4 << 20, ge=1024, title="Larger stage inputs are rejected unread")
    threads: int = Field(1, ge=1, le=256, title="torch CPU threads for the stage")
    whole_model: bool = Field(False, title="Run every stage here and answer at the final exit (baseline)")


class OrchestratorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: Path | None = Field(
        None, title="Bundle whose threshold profile is used (default: MNIST reference)"
    )
    mode: PolicyMode = Field("adaptive", title="adaptive, static (fixed thresholds) or no-exit")
    criterion: str | None = Field(None, title="Exit criterion (default: the bundle's default)")
    latency_target_ms: float = Field(500.0, gt=0, le=3_600_000, title="p95 end-to-end latency target")
    static_thresholds: list[float | None] | None = Field(None, title="Thresholds for static mode")
    control_interval_s: float = Field(0.5, gt=0, le=60, title="How often thresholds are reconsidered")
    window_s: float = Field(5.0, gt=0, le=600, title="Sliding window for observed latency and rates")
    headroom: float = Field(
        0.8, gt=0, lt=1, title="Only move to a slower setting if predicted p95 < target x this"
    )


class ClientSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        default_factory=lambda: f"client-{socket.gethostname()}-{os.getpid()}", max_length=128
    )
    deadline_ms: float = Field(2000.0, gt=0, le=3_600_000, title="Default per-request deadline")
    grace_ms: float = Field(1000.0, ge=0, le=600_000, title="Wait this long past the deadline before timeout")
    image_codec: Literal["png", "jpeg", "raw"] = Field("png", title="How arrays are sent to stage 0")


class DistreeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTREE_", env_nested_delimiter="__", extra="forbid")

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    topic_prefix: str = Field("distree", title="First topic level")
    pipeline: str = Field("default", title="Pipeline name (second topic level)")
    device: DeviceSettings = Field(default_factory=DeviceSettings)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    client: ClientSettings = Field(default_factory=ClientSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> DistreeSettings:
    """Settings from the config file, the environment and explicit overrides (highest)."""
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(config_file)

    class _Configured(DistreeSettings):
        model_config = SettingsConfigDict(**{**DistreeSettings.model_config, "toml_file": config_file})

    return _Configured(**_drop_none(overrides))


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
