"""The whole pipeline in one process, through the same runners, codec and envelopes.

The reference the distributed pipeline is checked against: same input and policy must give
the same label, exit stage and confidence.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from distree_mqtt.device.runner import StageRunner
from distree_mqtt.protocol import Policy, Result
from distree_mqtt.wire import EnvelopeHeader, TensorInfo, decode_envelope, encode_envelope
from distree_mqtt.wire.images import encode_image


class LocalPipeline:
    def __init__(self, bundle_dir: Path, codec: str = "int8+zstd") -> None:
        first = StageRunner(bundle_dir, 0, codec, "local-0")
        self.runners = [first] + [
            StageRunner(bundle_dir, k, codec, f"local-{k}") for k in range(1, len(first.manifest.stages))
        ]

    def infer(
        self, image: np.ndarray, policy: Policy, request_id: str = "local", image_codec: str = "png"
    ) -> Result:
        payload, shape = encode_image(image, image_codec)
        now = time.time()
        header = EnvelopeHeader(
            request_id=request_id,
            source="local",
            model_hash=self.runners[0].model_hash,
            stage_index=0,
            created_at=now,
            deadline=now + 3600,
            tensor=TensorInfo(
                kind="image", codec=image_codec, dtype="uint8", shape=shape, payload_bytes=0, crc32=0
            ),
        )
        message = encode_envelope(header, payload)
        for runner in self.runners:
            work = runner.prepare(decode_envelope(message, 1 << 26), time.time(), len(message))
            (decision,), _ = runner.run([work], policy)
            if decision.kind == "exit":
                assert decision.result is not None
                return decision.result
            assert decision.message is not None
            message = decision.message
        raise RuntimeError("the final stage did not answer")
