"""The stage-input envelope (wire format version 1).

    offset  size  field
    0       4     magic b"DTRE"
    4       1     version (1)
    5       4     header length H, unsigned big-endian
    9       H     header: UTF-8 JSON (EnvelopeHeader)
    9+H     P     payload: the tensor, packed by the codec named in the header

Everything a device needs travels in the envelope, so the protocol works on MQTT 3.1.1 brokers
that carry no message properties. Decoding validates sizes, the header, the checksum and the
codec's own layout before it allocates the tensor; see docs/protocol.md.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distree_mqtt.wire.codecs import CodecError, get_codec

MAGIC = b"DTRE"
VERSION = 1
PREFIX = struct.Struct(">4sBI")
MAX_HEADER_BYTES = 16 * 1024
MAX_HOPS = 32
IDENTIFIER = r"^[A-Za-z0-9._:-]{1,64}$"


class EnvelopeError(ValueError):
    """A message that is not a valid envelope; the message says why (never echoes the payload)."""


class Hop(BaseModel):
    """One stage's visit: where it ran and how long the request waited and computed there."""

    model_config = ConfigDict(extra="forbid")

    stage_index: int = Field(ge=0, le=64)
    device: str = Field(max_length=64)
    queue_ms: float = Field(ge=0, le=86_400_000)
    compute_ms: float = Field(ge=0, le=86_400_000)
    wire_bytes: int = Field(0, ge=0, title="Size of the envelope this stage received")


class Prediction(BaseModel):
    """The best answer so far, so a downstream failure can still answer (degraded)."""

    model_config = ConfigDict(extra="forbid")

    label: int = Field(ge=0)
    confidence: float = Field(ge=0, le=1)
    exit_stage: int = Field(ge=0, le=64)


class TensorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["features", "image"] = Field(title="features between stages; image into stage 0")
    codec: str = Field(
        max_length=32,
        title="features: float32, float16, int8, int8+zlib, int8+zstd; image: jpeg, png, raw (features also int6+zstd)",
    )
    dtype: Literal["float32", "uint8"]
    shape: list[int] = Field(max_length=4, title="Per-sample shape, e.g. [C, H, W]; raw images [H, W, C]")
    payload_bytes: int = Field(ge=0)
    crc32: int = Field(ge=0, le=0xFFFFFFFF)


class EnvelopeHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(pattern=IDENTIFIER)
    source: str = Field(max_length=128, title="Who asked; escaped before it becomes a topic level")
    model_hash: str = Field(pattern=r"^[0-9a-f]{64}$", title="Content hash of the bundle that produced it")
    stage_index: int = Field(ge=0, le=64, title="The stage this envelope is input for")
    created_at: float = Field(gt=0, title="Unix time the request was created (seconds)")
    deadline: float = Field(gt=0, title="Unix time by which an answer is wanted (seconds)")
    settle_by: float | None = Field(
        None,
        gt=0,
        title="Unix time (deadline + the client's grace) after which the client has settled the "
        "request without us: devices drop it then instead of answering twice",
    )
    policy_version: int = Field(0, ge=0)
    hops: list[Hop] = Field(default_factory=list, max_length=MAX_HOPS)
    best: Prediction | None = None
    exit_probabilities: list[Annotated[list[float], Field(max_length=4096)]] = Field(
        default_factory=list,
        max_length=MAX_HOPS,
        title="Calibrated class probabilities of every earlier exit (for patience/convergence criteria)",
    )
    reply_to: str | None = Field(None, max_length=256, title="Extra topic the result is also published to")
    tensor: TensorInfo


@dataclass(frozen=True)
class Envelope:
    header: EnvelopeHeader
    payload: bytes

    def features(self, max_output_bytes: int) -> np.ndarray:
        """Decode a feature tensor (raises EnvelopeError on any inconsistency)."""
        info = self.header.tensor
        if info.kind != "features":
            raise EnvelopeError(f"envelope carries {info.kind}, not features")
        try:
            array = get_codec(info.codec).decode(self.payload, tuple(info.shape), max_output_bytes)
        except CodecError as error:
            raise EnvelopeError(str(error)) from None
        if not np.isfinite(array).all():
            raise EnvelopeError("features contain NaN or infinite values")
        return array


def encode_envelope(header: EnvelopeHeader, payload: bytes) -> bytes:
    """Pack header and payload; the header's payload size and checksum are filled in here."""
    tensor = header.tensor.model_copy(update={"payload_bytes": len(payload), "crc32": zlib.crc32(payload)})
    header = header.model_copy(update={"tensor": tensor})
    header_bytes = header.model_dump_json(exclude_none=True).encode()
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise EnvelopeError(f"header is {len(header_bytes)} bytes, over the {MAX_HEADER_BYTES} limit")
    return PREFIX.pack(MAGIC, VERSION, len(header_bytes)) + header_bytes + payload


def decode_envelope(message: bytes, max_message_bytes: int) -> Envelope:
    """Parse and check an envelope without trusting any length it declares."""
    if len(message) > max_message_bytes:
        raise EnvelopeError(f"message is {len(message)} bytes, over the {max_message_bytes} limit")
    if len(message) < PREFIX.size:
        raise EnvelopeError(f"message is {len(message)} bytes, too short for an envelope")
    magic, version, header_length = PREFIX.unpack_from(message)
    if magic != MAGIC:
        raise EnvelopeError("not a distree envelope (bad magic)")
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version} is not supported (this release reads {VERSION})")
    if header_length > MAX_HEADER_BYTES or PREFIX.size + header_length > len(message):
        raise EnvelopeError(f"header length {header_length} does not fit the {len(message)}-byte message")
    header_bytes = message[PREFIX.size : PREFIX.size + header_length]
    try:
        header = EnvelopeHeader.model_validate_json(header_bytes)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "header"
        raise EnvelopeError(f"invalid envelope header at {where}: {first['msg']}") from None
    payload = message[PREFIX.size + header_length :]
    if len(payload) != header.tensor.payload_bytes:
        raise EnvelopeError(
            f"payload is {len(payload)} bytes but the header declares {header.tensor.payload_bytes}"
        )
    if zlib.crc32(payload) != header.tensor.crc32:
        raise EnvelopeError("payload checksum mismatch")
    if header.deadline < header.created_at:
        raise EnvelopeError("deadline is before the creation time")
    if header.settle_by is not None and header.settle_by < header.deadline:
        raise EnvelopeError("settle_by is before the deadline")
    return Envelope(header, payload)
