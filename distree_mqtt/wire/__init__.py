"""The wire: the binary envelope every stage input travels in, and the feature codecs."""

from distree_mqtt.wire.codecs import FeatureCodec, codec_names, get_codec
from distree_mqtt.wire.envelope import (
    Envelope,
    EnvelopeError,
    EnvelopeHeader,
    Hop,
    Prediction,
    TensorInfo,
    decode_envelope,
    encode_envelope,
)

__all__ = [
    "Envelope",
    "EnvelopeError",
    "EnvelopeHeader",
    "FeatureCodec",
    "Hop",
    "Prediction",
    "TensorInfo",
    "codec_names",
    "decode_envelope",
    "encode_envelope",
    "get_codec",
]
