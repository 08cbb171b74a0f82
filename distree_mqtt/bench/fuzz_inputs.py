"""Hostile inputs for every topic the services subscribe to, as Hypothesis strategies.

Each strategy yields `FuzzInput`s: the bytes to publish, the case they exercise and what the
protocol promises for them (`expect`):

* `rejected`: refused with an entry on `errors` by every component that reads the topic;
* `answered`: a valid request from a hostile-looking source, answered on its escaped results topic;
* `ignored`: tolerated input (free-text status, Home Assistant's birth, schema-valid telemetry);
* `dropped`: over the device's MQTT maximum packet size, so the broker never delivers it.

`draw` runs a strategy through Hypothesis's own engine (`@given` with a seed), so the campaign
gets Hypothesis's distribution of edge cases without `.example()`. The stage-input strategies
build every hostile envelope from a valid one, changing one thing, so each is rejected for the
reason its case names.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import zstandard
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from distree_mqtt.topics import Topics
from distree_mqtt.wire import get_codec
from distree_mqtt.wire.envelope import IDENTIFIER, MAX_HEADER_BYTES

Expect = Literal["rejected", "answered", "ignored", "dropped"]
T = TypeVar("T")


@dataclass(frozen=True)
class FuzzInput:
    case: str
    payload: bytes
    expect: Expect
    topic: str | None = None  # where the target has many topics (control/set/<x>, status/<id>)
    request: tuple[str, str] | None = None  # (source, request_id) of an `answered` input


@dataclass(frozen=True)
class FuzzContext:
    """What the hostile inputs are built around: the pipeline's topics and the bundle."""

    topics: Topics
    model_hash: str
    stage_input_shapes: list[list[int]]
    class_count: int
    codec: str
    max_message_bytes: int
    criteria: tuple[str, ...]
    stages: int = 3
    ids: itertools.count = field(default_factory=itertools.count)

    def request_id(self) -> str:
        return f"fuzz-{next(self.ids)}"


def draw(strategy: st.SearchStrategy[T], count: int, seed_value: int) -> list[T]:
    """Up to `count` values from Hypothesis's generation phase (fewer when it exhausts them)."""
    drawn: list[T] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        drawn.append(value)

    collect()
    return drawn


# -- envelopes -------------------------------------------------------------------------------
def pack(header: dict[str, Any] | bytes, payload: bytes, magic: bytes = b"DTRE", version: int = 1) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">4sBI", magic, version, len(raw)) + raw + payload


def _with_payload(header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    tensor = dict(header["tensor"], payload_bytes=len(payload), crc32=zlib.crc32(payload))
    return dict(header, tensor=tensor)


def valid_input(context: FuzzContext, stage: int, source: str = "fuzz") -> tuple[dict[str, Any], bytes]:
    """A header and payload the device of `stage` accepts (created now, deadline in 10 min)."""
    import time

    now = time.time()
    if stage == 0:
        payload = bytes(28 * 28)
        tensor = {"kind": "image", "codec": "raw", "dtype": "uint8", "shape": [28, 28, 1]}
    else:
        shape = context.stage_input_shapes[stage]
        features = np.abs(np.random.default_rng(stage).standard_normal(shape)).astype(np.float32)
        payload = get_codec(context.codec).encode(features)
        tensor = {"kind": "features", "codec": context.codec, "dtype": "float32", "shape": shape}
    header = {
        "request_id": context.request_id(),
        "source": source,
        "model_hash": context.model_hash,
        "stage_index": stage,
        "created_at": now,
        "deadline": now + 600,
        "hops": [
            {"stage_index": k, "device": f"fuzz-{k}", "queue_ms": 0.1, "compute_ms": 1.0, "wire_bytes": 1}
            for k in range(stage)
        ],
        "exit_probabilities": [[1.0 / context.class_count] * context.class_count for _ in range(stage)],
        "tensor": {**tensor, "payload_bytes": 0, "crc32": 0},
    }
    if stage > 0:
        header["best"] = {"label": 0, "confidence": 0.5, "exit_stage": stage - 1}
    return _with_payload(header, payload), payload


def _envelope(context: FuzzContext, stage: int, change: Callable[[dict[str, Any]], None]) -> bytes:
    header, payload = valid_input(context, stage)
    change(header)
    return pack(header, payload)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        target = header
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value

    return change


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _invalid_field_values(context: FuzzContext, stage: int) -> st.SearchStrategy[tuple[str, Any]]:
    """(dotted field, a value its schema or the device refuses)."""
    not_identifier = st.one_of(
        st.text(max_size=70).filter(lambda text: re.fullmatch(IDENTIFIER, text) is None),
        st.sampled_from(["a/b", "+", "#", "a+b#", "x" * 65, ""]),
        st.integers(),
        st.none(),
    )
    other_hash = st.text("0123456789abcdef", min_size=64, max_size=64).filter(
        lambda h: h != context.model_hash
    )
    return st.one_of(
        st.tuples(st.just("request_id"), not_identifier),
        st.tuples(
            st.just("source"), st.one_of(st.text(min_size=129, max_size=200), st.integers(), st.none())
        ),
        st.tuples(st.just("model_hash"), st.one_of(st.text(max_size=70), other_hash.map(str.upper))),
        st.tuples(st.just("stage_index"), st.integers().filter(lambda index: index != stage)),
        st.tuples(st.just("created_at"), st.one_of(st.floats(max_value=0), st.text(max_size=5), st.none())),
        st.tuples(st.just("policy_version"), st.integers(max_value=-1)),
        st.tuples(
            st.just("hops"), st.just([{"stage_index": 0, "device": "d", "queue_ms": 0, "compute_ms": 0}] * 33)
        ),
        st.tuples(
            st.just("hops"), st.just([{"stage_index": 0, "device": "d", "queue_ms": -1, "compute_ms": 0}])
        ),
        st.tuples(
            st.just("exit_probabilities"),
            st.lists(st.lists(st.floats(0, 1), max_size=12), max_size=4).filter(
                lambda rows: len(rows) != stage or any(len(row) != context.class_count for row in rows)
            ),
        ),
        st.tuples(st.just("best"), st.just({"label": 0, "confidence": 1.5, "exit_stage": 0})),
        st.tuples(st.just("reply_to"), st.text(min_size=257, max_size=300)),
        st.tuples(st.just("unexpected_field"), JSON_VALUES),
        st.tuples(
            st.just("tensor.kind"),
            st.text(max_size=10).filter(lambda kind: kind not in ("image", "features")),
        ),
        st.tuples(st.just("tensor.codec"), st.text(min_size=33, max_size=40)),
        st.tuples(st.just("tensor.shape"), st.lists(st.integers(1, 4), min_size=5, max_size=6)),
        st.tuples(st.just("tensor.payload_bytes"), st.integers(max_value=-1)),
        st.tuples(st.just("tensor.crc32"), st.integers(min_value=2**32)),
    )


def _truncated(context: FuzzContext, stage: int) -> st.SearchStrategy[bytes]:
    return st.floats(0, 1, exclude_max=True).map(
        lambda share: (lambda message: message[: int(share * len(message))])(
            _envelope(context, stage, lambda _: None)
        )
    )


def _non_finite(context: FuzzContext, stage: int, codec: str, value: float) -> bytes:
    """Valid features of `stage` under `codec` with one value (or one scale) made NaN/Inf."""
    header, _ = valid_input(context, stage)
    shape = header["tensor"]["shape"]
    features = np.abs(np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    if codec in ("float32", "float16"):
        features.flat[0] = value
        payload = get_codec(codec).encode(features)
    elif codec == "int8":  # channel minimums lead the payload
        payload = struct.pack("<f", value) + get_codec(codec).encode(features)[4:]
    else:  # compressed: a layout byte, then the channel centres
        raw = _decompress(codec, get_codec(codec).encode(features))
        raw = raw[:1] + struct.pack("<f", value) + raw[5:]
        payload = zlib.compress(raw) if codec.endswith("zlib") else zstandard.compress(raw)
    header["tensor"]["codec"] = codec
    return pack(_with_payload(header, bytes(payload)), bytes(payload))


def _decompress(codec: str, payload: bytes) -> bytes:
    if codec.endswith("zlib"):
        return zlib.decompress(payload)
    return zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 24)


_BOMBS: dict[str, bytes] = {}


def _compression_bomb(kind: str) -> bytes:
    """64 MiB of zeros in a few KiB (built once)."""
    if kind not in _BOMBS:
        zeros = b"\x00" * (64 << 20)
        _BOMBS[kind] = (
            zlib.compress(zeros, 9) if kind == "zlib" else zstandard.ZstdCompressor().compress(zeros)
        )
    return _BOMBS[kind]


def png_claiming(width: int, height: int, body: bytes = b"\x00" * 32) -> bytes:
    """A PNG whose header declares `width` x `height` pixels, with a tiny (or any) body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(body))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG start with a baseline frame header declaring `width` x `height` pixels."""
    frame = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", 2 + len(frame)) + frame + b"\xff\xd9"


def _image_envelope(context: FuzzContext, codec: str, data: bytes, shape: list[int] | None = None) -> bytes:
    header, _ = valid_input(context, 0)
    header["tensor"].update(codec=codec, shape=shape or [])
    return pack(_with_payload(header, data), data)


def stage_input_cases(context: FuzzContext, stage: int) -> list[st.SearchStrategy[FuzzInput]]:
    """One strategy per hostile case of a stage input (drawn separately, so each is exercised)."""
    limit = context.max_message_bytes

    def case(
        name: str, strategy: st.SearchStrategy[bytes], expect: Expect = "rejected"
    ) -> st.SearchStrategy[FuzzInput]:
        return strategy.map(lambda payload: FuzzInput(name, payload, expect))

    def field_change(change: tuple[str, Any]) -> bytes:
        return _envelope(context, stage, _set(*change))

    valid = lambda: _envelope(context, stage, lambda _: None)  # noqa: E731
    cases = [
        case("random_bytes", st.binary(max_size=4096)),
        case(
            "random_bytes_numpy",
            st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 1 << 16)).map(
                lambda pair: np.random.default_rng(pair[0]).bytes(pair[1])
            ),
        ),
        case("truncated", _truncated(context, stage)),
        case(
            "wrong_version",
            st.integers(0, 255)
            .filter(lambda version: version != 1)
            .map(lambda version: b"DTRE" + bytes([version]) + valid()[5:]),
        ),
        case(
            "bad_magic",
            st.binary(min_size=4, max_size=4)
            .filter(lambda magic: magic != b"DTRE")
            .map(lambda m: m + valid()[4:]),
        ),
        case(
            "header_length_lies",
            st.integers(0, 2**32 - 1).map(lambda length: _lying_length(valid(), length)),
        ),
        case(
            "invalid_header_json",
            st.one_of(
                st.binary(max_size=200).filter(lambda raw: not _is_json_object(raw)),
                JSON_VALUES.filter(lambda value: not isinstance(value, dict)).map(
                    lambda value: json.dumps(value).encode()
                ),
                st.just(b"{" * (MAX_HEADER_BYTES - 1)),
            ).map(lambda raw: pack(raw, b"")),
        ),
        case("header_field", _invalid_field_values(context, stage).map(field_change)),
        case(
            "shape_bomb",
            st.lists(
                st.one_of(
                    st.sampled_from([0, -1, 2**31, 2**32, 2**62, 2**63 - 1]), st.integers(100_000, 2**40)
                ),
                min_size=1,
                max_size=4,
            ).map(
                lambda shape: _envelope(
                    context, stage, _set("tensor.shape", shape if stage else [*shape[:2], 1])
                )
            ),
        ),
        case(
            "dtype_mismatch",
            st.sampled_from(
                [
                    ("tensor.dtype", "float64"),
                    ("tensor.dtype", "int8"),
                    ("tensor.dtype", "uint8" if stage else "float32"),
                ]
                + (
                    [("tensor.codec", "jpeg"), ("tensor.kind", "image")]
                    if stage
                    else [("tensor.codec", "float32"), ("tensor.kind", "features")]
                )
            ).map(field_change),
        ),
        case(
            "wrong_model_hash",
            st.text("0123456789abcdef", min_size=64, max_size=64)
            .filter(lambda text: text != context.model_hash)
            .map(lambda text: field_change(("model_hash", text))),
        ),
        case(
            "deadline_years_ahead",
            st.floats(1.01, 200).map(lambda years: _envelope(context, stage, _deadline_years_ahead(years))),
        ),
        case(
            "deadline_before_creation",
            st.floats(0.001, 1e6).map(lambda seconds: _envelope(context, stage, _deadline_before(seconds))),
        ),
        case(
            "created_long_ago",
            st.floats(1.0, 1e9).map(lambda seconds: _envelope(context, stage, _created_ago(seconds))),
        ),
        case(
            "oversized",
            st.integers(limit + 1, 2 * limit).map(lambda size: _padded(context, stage, size)),
        ),
        case(
            "over_packet_limit",
            st.integers(2 * limit + 70_000, 3 * limit).map(lambda size: _padded(context, stage, size)),
            "dropped",
        ),
        case(
            "non_utf8_source",
            st.binary(min_size=1, max_size=8)
            .map(lambda raw: raw.replace(b'"', b""))
            .filter(lambda raw: not _is_utf8(raw))
            .map(lambda raw: valid().replace(b'"source": "fuzz"', b'"source": "' + raw + b'"', 1)),
        ),
        case(
            "surrogate_source",
            st.sampled_from(["\\ud800", "\\udfff", "a\\udc80b"]).map(
                lambda escaped: valid().replace(
                    b'"source": "fuzz"', b'"source": "' + escaped.encode() + b'"', 1
                )
            ),
        ),
        case(
            "wildcard_request_id",
            st.text(max_size=6)
            .map(lambda text: text + "/+#")
            .map(lambda rid: field_change(("request_id", rid))),
        ),
    ]
    cases.append(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
        .map(lambda text: "+#/$ " + text)
        .map(lambda source: _answered(context, stage, source))
    )
    if stage == 0:
        cases += [
            case(
                "image_bomb",
                st.one_of(
                    st.tuples(st.integers(4097, 2**31 - 1), st.integers(4097, 2**31 - 1)).map(
                        lambda size: _image_envelope(context, "png", png_claiming(*size))
                    ),
                    st.tuples(st.integers(4097, 65535), st.integers(4097, 65535)).map(
                        lambda size: _image_envelope(context, "jpeg", jpeg_claiming(*size))
                    ),
                    st.just(_image_envelope(context, "png", png_claiming(100_000, 100_000))),
                    st.tuples(st.integers(1 << 13, 1 << 20), st.integers(1 << 13, 1 << 20)).map(
                        lambda size: _image_envelope(context, "raw", b"\x00" * 16, [size[0], size[1], 1])
                    ),
                ),
            ),
            case(
                "corrupt_image",
                st.tuples(st.sampled_from(["png", "jpeg"]), st.binary(max_size=256)).map(
                    lambda pair: _image_envelope(
                        context,
                        pair[0],
                        (b"\x89PNG\r\n\x1a\n" if pair[0] == "png" else b"\xff\xd8") + pair[1],
                    )
                ),
            ),
        ]
    else:
        cases += [
            case(
                "non_finite_features",
                st.tuples(
                    st.sampled_from(_feature_codecs()), st.sampled_from([math.nan, math.inf, -math.inf])
                ).map(lambda pair: _non_finite(context, stage, *pair)),
            ),
            case(
                "decompression_bomb",
                st.sampled_from(["int8+zlib", "int8+zstd", "int6+zstd"]).map(
                    lambda codec: _bomb_envelope(context, stage, codec)
                ),
            ),
        ]
    return cases


def _lying_length(message: bytes, length: int) -> bytes:
    """The valid message with a header length that is not its header's."""
    (real,) = struct.unpack(">I", message[5:9])
    return message[:5] + struct.pack(">I", length if length != real else real + 1) + message[9:]


def _feature_codecs() -> list[str]:
    from distree_mqtt.wire import codec_names

    return codec_names()


def _bomb_envelope(context: FuzzContext, stage: int, codec: str) -> bytes:
    header, _ = valid_input(context, stage)
    payload = _compression_bomb("zlib" if codec.endswith("zlib") else "zstd")
    header["tensor"]["codec"] = codec
    return pack(_with_payload(header, payload), payload)


def _padded(context: FuzzContext, stage: int, size: int) -> bytes:
    header, payload = valid_input(context, stage)
    filler = b"\x00" * max(0, size - len(pack(header, payload)))
    return pack(_with_payload(header, payload + filler), payload + filler)


def _deadline_years_ahead(years: float) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        header["deadline"] = header["created_at"] + years * 365 * 86400

    return change


def _deadline_before(seconds: float) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        header["deadline"] = header["created_at"] - seconds

    return change


def _created_ago(seconds: float) -> Callable[[dict[str, Any]], None]:
    """Created a day and more ago (a clock decades off), deadline a second after creation."""

    def change(header: dict[str, Any]) -> None:
        header["created_at"] = max(1.0, header["created_at"] - 86400 - seconds)
        header["deadline"] = header["created_at"] + 1

    return change


def _answered(context: FuzzContext, stage: int, source: str) -> FuzzInput:
    """A valid request from a source full of topic syntax: answered on its escaped topic."""
    source = source[:128]
    header, payload = valid_input(context, stage, source=source)
    return FuzzInput(
        "hostile_source", pack(header, payload), "answered", request=(source, header["request_id"])
    )


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- control, policy, status, descriptors, telemetry, results ------------------------------------
SETTINGS = ("latency_target_ms", "mode", "static_thresholds", "criterion")
MODES = ("adaptive", "static", "no-exit")


def control_accepts(setting: str, payload: bytes, context: FuzzContext) -> bool:
    """The orchestrator's rules for control/set (docs/protocol.md), to keep only invalid values."""
    text = payload.decode("utf-8", "replace").strip()
    try:
        if setting == "latency_target_ms":
            value = float(text)
            return math.isfinite(value) and 1 <= value <= 3_600_000
        if setting == "mode":
            return text in MODES
        if setting == "static_thresholds":
            values = TypeAdapter(list[float | None]).validate_json(text)
            return len(values) == context.stages - 1 and all(v is None or math.isfinite(v) for v in values)
        if setting == "criterion":
            return text in context.criteria
    except ValueError:
        return False
    return False


def control_cases(context: FuzzContext) -> st.SearchStrategy[FuzzInput]:
    values = st.one_of(
        st.floats().map(lambda number: repr(number).encode()),
        st.integers().map(lambda number: str(number).encode()),
        st.sampled_from([b"0", b"-5", b"3600001", b"1e400", b"nan", b"inf", b"", b" ", b"\xff\xfe", b"null"]),
        st.text(max_size=40).map(str.encode),
        st.binary(max_size=64),
        st.lists(st.one_of(st.none(), st.floats(), st.text(max_size=3), st.booleans()), max_size=5).map(
            lambda items: json.dumps(items).encode()
        ),
        st.integers(1 << 16, 1 << 20).map(lambda size: b"9" * size),
    )
    known = st.tuples(st.sampled_from(SETTINGS), values)
    unknown = st.tuples(st.text(min_size=1, max_size=24).filter(lambda name: name not in SETTINGS), values)
    return (
        st.one_of(known, unknown)
        .filter(lambda pair: not control_accepts(pair[0], pair[1], context))
        .map(
            lambda pair: FuzzInput(
                "unknown_setting" if pair[0] not in SETTINGS else f"bad_{pair[0]}",
                pair[1],
                "rejected",
                topic=context.topics.control_set(pair[0]),
            )
        )
    )


def policy_refused(payload: bytes, context: FuzzContext) -> bool:
    """What every device does with a policy: refuse it (schema or unknown criterion), or apply it."""
    from pydantic import ValidationError

    from distree_mqtt.model.criteria import get_criterion
    from distree_mqtt.protocol import Policy

    try:
        get_criterion(Policy.model_validate_json(payload).criterion)
    except (ValidationError, ValueError):
        return True
    return False


def policy_cases(context: FuzzContext) -> st.SearchStrategy[FuzzInput]:
    """Policies every device refuses (schema or criterion); retained, as the real one is."""
    base = {"version": 10**6, "mode": "no-exit", "criterion": "max_softmax", "thresholds": [None, None]}
    invalid_fields = st.one_of(
        st.tuples(
            st.just("version"),
            st.one_of(st.integers(max_value=-1), st.sampled_from(["", "x", "1.5"]), st.none()),
        ),
        st.tuples(st.just("mode"), st.text(max_size=10).filter(lambda mode: mode not in MODES)),
        st.tuples(
            st.just("criterion"),
            st.one_of(
                st.text(max_size=64).filter(lambda name: name not in context.criteria),
                st.text(min_size=65, max_size=70),
            ),
        ),
        st.tuples(st.just("thresholds"), st.one_of(st.just([0.5] * 65), st.just("none"), st.just([["x"]]))),
        st.tuples(
            st.just("latency_target_ms"), st.one_of(st.floats(max_value=0), st.floats(min_value=3_600_001))
        ),
        st.tuples(st.just("remaining_ms"), st.just([1.0] * 65)),
    )
    return st.one_of(
        st.binary(max_size=256).map(lambda raw: FuzzInput("garbage", raw, "rejected")),
        invalid_fields.map(
            lambda change: FuzzInput(
                f"bad_{change[0]}", json.dumps({**base, change[0]: change[1]}).encode(), "rejected"
            )
        ),
        st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
            lambda token: FuzzInput(
                "non_finite",
                json.dumps(base)[:-1].encode() + f', "issued_at": {token}}}'.encode(),
                "rejected",
            )
        ),
    )


def _fuzz_ids() -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).map(lambda text: "fuzz-" + text)


def status_cases(context: FuzzContext) -> st.SearchStrategy[FuzzInput]:
    """Any status text for devices that do not exist: free text, never an error."""
    payloads = st.one_of(st.sampled_from([b"online", b"offline", b"stopped", b""]), st.binary(max_size=64))
    return st.tuples(_fuzz_ids(), payloads).map(
        lambda pair: FuzzInput("status_text", pair[1], "ignored", topic=context.topics.status(pair[0]))
    )


def descriptor_cases(context: FuzzContext) -> st.SearchStrategy[FuzzInput]:
    good = {
        "device": "x",
        "stage_index": 1,
        "num_stages": 3,
        "model_id": "m",
        "model_hash": "00" * 32,
        "codec": "int8+zstd",
        "started_at": 1.0,
    }
    invalid = st.one_of(
        st.binary(min_size=1, max_size=256)
        .filter(lambda raw: not _is_json_object(raw))
        .map(lambda raw: ("garbage", raw)),
        st.tuples(
            st.sampled_from(["stage_index", "num_stages", "started_at", "slowdown"]),
            st.one_of(st.integers(max_value=-1), st.sampled_from(["", "x", "NaN", "Infinity"])),
        ).map(lambda change: ("bad_" + change[0], _json_with(good, change[0], change[1]))),
        st.sampled_from(["device", "model_hash", "codec"]).map(
            lambda name: (
                "missing_" + name,
                json.dumps({k: v for k, v in good.items() if k != name}).encode(),
            )
        ),
    )
    return st.tuples(_fuzz_ids(), invalid).map(
        lambda pair: FuzzInput(
            pair[1][0],
            pair[1][1],
            "ignored" if _valid_descriptor(pair[1][1]) else "rejected",
            topic=context.topics.device_info(pair[0]),
        )
    )


def _valid_descriptor(payload: bytes) -> bool:
    """Descriptors are informational: a schema-valid one (say, a negative slowdown) is kept."""
    from pydantic import ValidationError

    from distree_mqtt.protocol import DeviceInfo

    try:
        DeviceInfo.model_validate_json(payload)
    except ValidationError:
        return False
    return True


def rate_overflow_telemetry(context: FuzzContext) -> list[FuzzInput]:
    """Per ghost stage device: two schema-valid reports 5e-324 s apart, 2**63 requests between
    them and a 1.8e308 ms stage time: its arrival rate and utilisation overflow to infinity."""
    inputs = []
    for stage in range(context.stages):
        for timestamp, received in ((5e-324, 0), (1e-323, 2**63)):
            report = {
                **TELEMETRY,
                "device": ghost_id(stage),
                "stage_index": stage,
                "timestamp": timestamp,
                "received": received,
                "compute_p50_ms": 1.7976931348623157e308,
            }
            inputs.append(
                FuzzInput(
                    "rate_overflow",
                    json.dumps(report).encode(),
                    "ignored",
                    topic=context.topics.telemetry(ghost_id(stage)),
                )
            )
    return inputs


def _json_with(good: dict[str, Any], name: str, value: Any) -> bytes:
    if value in ("NaN", "Infinity"):
        return json.dumps(good)[:-1].encode() + f', "{name}": {value}}}'.encode()
    return json.dumps({**good, name: value}).encode()


TELEMETRY = {
    "device": "x",
    "stage_index": 0,
    "timestamp": 1.0,
    "interval_s": 1,
    "queue_length": 0,
    "queue_capacity": 4,
    "queue_delay_p50_ms": 0,
    "queue_delay_p95_ms": 0,
    "compute_p50_ms": 1,
    "compute_p95_ms": 1,
    "received": 0,
    "processed": 0,
    "exited": 0,
    "forwarded": 0,
    "degraded": 0,
    "rejected": 0,
    "errors": 0,
    "bytes_in": 0,
    "bytes_out": 0,
    "policy_version": 0,
}
_NUMBERS = [name for name, value in TELEMETRY.items() if isinstance(value, (int, float)) and name != "device"]


def telemetry_cases(context: FuzzContext) -> st.SearchStrategy[FuzzInput]:
    """Garbage and out-of-range numbers (refused by every device and the orchestrator), and
    schema-valid extremes (accepted: they must not break the load estimate)."""
    out_of_range = st.tuples(
        st.sampled_from(_NUMBERS),
        st.one_of(
            st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1", "-1e300", '"x"', "null", "[]"]),
            st.integers(max_value=-1).map(str),
        ),
    ).map(
        lambda change: (
            "out_of_range",
            json.dumps(TELEMETRY)[:-1].encode() + f', "{change[0]}": {change[1]}}}'.encode(),
        )
    )
    garbage = (
        st.binary(max_size=256).filter(lambda raw: b'"kind"' not in raw).map(lambda raw: ("garbage", raw))
    )
    ordinary = st.tuples(_fuzz_ids(), st.one_of(out_of_range, garbage)).map(
        lambda pair: FuzzInput(pair[1][0], pair[1][1], "rejected", topic=context.topics.telemetry(pair[0]))
    )
    # Extreme but finite numbers from `ghost` devices that also say `online` (see ghost_id):
    # they enter the orchestrator's load estimate, which must stay publishable.
    extreme = st.tuples(
        st.sampled_from(_NUMBERS),
        st.sampled_from(["1e300", "1.7976931348623157e308", str(2**63), str(10**30), "5e-324"]),
        st.integers(0, context.stages - 1),
        st.floats(0, 1e9),
    ).map(lambda change: _extreme_telemetry(context, *change))
    return st.one_of(ordinary, extreme)


def ghost_id(stage: int) -> str:
    """A stage device that exists only as `online` status and telemetry."""
    return f"fuzz-ghost-{stage}"


def _extreme_telemetry(context: FuzzContext, field_name: str, value: str, stage: int, at: float) -> FuzzInput:
    from pydantic import ValidationError

    from distree_mqtt.protocol import Telemetry

    report = {**TELEMETRY, "device": ghost_id(stage), "stage_index": stage, "timestamp": at}
    payload = json.dumps(report)[:-1].encode() + f', "{field_name}": {value}}}'.encode()
    try:
        Telemetry.model_validate_json(payload)
        expect: Expect = "ignored"
    except ValidationError:
        expect = "rejected"
    return FuzzInput("extreme_numbers", payload, expect, topic=context.topics.telemetry(ghost_id(stage)))


def home_assistant_cases() -> st.SearchStrategy[FuzzInput]:
    return st.one_of(st.sampled_from([b"online", b"offline", b" online\n"]), st.binary(max_size=128)).map(
        lambda payload: FuzzInput("birth_text", payload, "ignored")
    )


def results_cases(context: FuzzContext, sources: list[str]) -> st.SearchStrategy[FuzzInput]:
    """Payloads on results topics the orchestrator (and a camera) read: anything but a Result."""
    garbage = st.one_of(
        st.binary(max_size=256),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.sampled_from(
            [
                b'{"request_id": "x", "source": "y", "outcome": "maybe"}',
                b'{"request_id": "x", "source": "y", "outcome": "result", "latency_ms": NaN}',
                b'{"request_id": 5, "source": "y", "outcome": "result"}',
            ]
        ),
    ).filter(lambda raw: not _looks_like_result(raw))
    return st.tuples(st.sampled_from(sources), garbage).map(
        lambda pair: FuzzInput("not_a_result", pair[1], "rejected", topic=context.topics.results(pair[0]))
    )


def _looks_like_result(raw: bytes) -> bool:
    from pydantic import ValidationError

    from distree_mqtt.protocol import Result

    try:
        Result.model_validate_json(raw)
    except (ValidationError, ValueError):
        return False
    return True
