"""Run one stage on a batch of validated envelopes and decide, per request, exit or forward.

Pure of MQTT: the service feeds it envelopes and publishes what it returns, which keeps the
exit logic testable without a broker and identical to the in-process reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from distree_mqtt.bundle import Manifest, load_manifest, load_stage
from distree_mqtt.model.criteria import ExitCriterion, ExitObservation, get_criterion
from distree_mqtt.model.multi_exit import ExitOutput
from distree_mqtt.protocol import HopReport, Policy, Progress, Result
from distree_mqtt.wire import (
    Envelope,
    EnvelopeError,
    EnvelopeHeader,
    Hop,
    Prediction,
    TensorInfo,
    encode_envelope,
    get_codec,
)
from distree_mqtt.wire.images import ImageError, decode_image, preprocess


class RejectedInput(ValueError):
    """A stage input this device will not run (reason in the message)."""


@dataclass
class Work:
    """One accepted request waiting for, or going through, the stage."""

    envelope: Envelope
    tensor: torch.Tensor  # the stage's input for this request, without batch dimension
    received_at: float
    wire_bytes: int
    queue_ms: float = 0.0


@dataclass
class Decision:
    kind: Literal["exit", "forward"]
    work: Work
    result: Result | None = None
    message: bytes | None = None  # the next stage's envelope when forwarding
    progress: Progress | None = None  # for the client when forwarding a request it will settle
    hops: list[Hop] = field(default_factory=list)
    cost_ms: float = 0.0  # worker time to decide and build it (scoring, result or encoding)


@dataclass(frozen=True)
class _BatchRun:
    """What one batch's decisions share: the stage's outputs and the policy in force."""

    logits: torch.Tensor
    probabilities: torch.Tensor
    features: torch.Tensor
    policy: Policy
    criterion: ExitCriterion
    threshold: float | None
    next_stage_online: bool
    remaining_ms: float | None
    compute_ms: float
    now: float


def settled_by_client(header: EnvelopeHeader, now: float) -> bool:
    """Whether the client has (about) settled this request on its own: an answer now would
    reach it after its verdict and count twice. A quarter of the grace (at most 1 s) covers
    the result's way to the client."""
    if header.settle_by is None:
        return False
    margin = min(1.0, 0.25 * (header.settle_by - header.deadline))
    return now >= header.settle_by - margin


def progress_of(header: EnvelopeHeader, best: Prediction, policy: Policy, model_id: str) -> Progress:
    """What the client may answer with if the stage this request goes to never does."""
    return Progress(
        request_id=header.request_id,
        label=best.label,
        confidence=best.confidence,
        exit_stage=best.exit_stage,
        stage_reached=header.stage_index + 1,
        deadline=header.deadline,
        policy_version=policy.version,
        model_id=model_id,
    )


@torch.no_grad()
def quiet_stage_time_ms(stage: nn.Module, input_shape: list[int], batch_size: int, runs: int = 15) -> float:
    """Fastest of `runs` timed passes of a stage on a batch of zeros, after two warm-ups."""
    inputs = torch.zeros(batch_size, *input_shape)
    for _ in range(2):
        stage(inputs)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        stage(inputs)
        best = min(best, time.perf_counter() - started)
    return best * 1000.0


class _WholeModel(nn.Module):
    """All stages in one module, answering only at the final exit (the one-device baseline)."""

    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ExitOutput]:
        for stage in self.stages:
            x, output = stage(x)
        return x, output


class StageRunner:
    def __init__(
        self,
        bundle_dir: Path,
        stage_index: int,
        codec: str = "int8+zstd",
        device_name: str = "device",
        whole_model: bool = False,
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest: Manifest = load_manifest(self.bundle_dir)
        self.stage_index = stage_index
        num_stages = len(self.manifest.stages)
        if whole_model:
            if stage_index != 0:
                raise ValueError("a whole-model device takes images: run it as stage 0")
            stages: list[nn.Module] = [
                load_stage(self.bundle_dir, k, self.manifest) for k in range(num_stages)
            ]
            self.stage: nn.Module = _WholeModel(stages).eval()
        else:
            self.stage = load_stage(self.bundle_dir, stage_index, self.manifest)
        self.entry = self.manifest.stages[stage_index]
        self.final_entry = self.manifest.stages[-1] if whole_model else self.entry
        self.is_final = whole_model or stage_index == num_stages - 1
        self._quiet_ms: dict[int, float] = {}
        self.codec = get_codec(codec)
        self.codec_name = codec
        self.device_name = device_name
        # Bound on the decoded tensor: the declared input shape in float32, with slack for codec headers.
        self.max_tensor_bytes = 4 * math.prod(self.entry.input_shape) + 65536

    def quiet_stage_ms(self, batch_size: int) -> float:
        """The stage's time for a batch on this host when nothing interferes (fastest of a few
        runs), measured once per batch size: the base that `--slowdown` multiplies."""
        if batch_size not in self._quiet_ms:
            self._quiet_ms[batch_size] = quiet_stage_time_ms(self.stage, self.entry.input_shape, batch_size)
        return self._quiet_ms[batch_size]

    @property
    def model_hash(self) -> str:
        return self.manifest.content_hash

    def prepare(self, envelope: Envelope, received_at: float, wire_bytes: int) -> Work:
        """Validate an envelope against this stage and decode its tensor (raises RejectedInput)."""
        header = envelope.header
        if header.model_hash != self.model_hash:
            raise RejectedInput(
                f"model hash {header.model_hash[:12]}... is not this bundle's {self.model_hash[:12]}..."
            )
        if header.stage_index != self.stage_index:
            raise RejectedInput(
                f"envelope is for stage {header.stage_index}, this device runs stage {self.stage_index}"
            )
        settle_by = header.settle_by or header.deadline
        if (
            header.deadline > header.created_at + 24 * 3600
            or settle_by > header.created_at + 24 * 3600
            or header.created_at > received_at + 300
        ):
            raise RejectedInput(
                "timestamps are not plausible (deadline or settle_by over a day ahead, or created in the future)"
            )
        if header.created_at < received_at - 24 * 3600:
            # A clock decades off would put absurd latencies into every result it gets.
            raise RejectedInput("timestamps are not plausible (created over a day ago)")
        if len(header.exit_probabilities) != self.stage_index or any(
            len(row) != len(self.manifest.input.class_names) for row in header.exit_probabilities
        ):
            raise RejectedInput("exit history does not match the stages before this one")
        try:
            if self.stage_index == 0:
                tensor = self._image_tensor(envelope)
            else:
                if header.tensor.kind != "features" or header.tensor.shape != self.entry.input_shape:
                    raise RejectedInput(
                        f"features of shape {header.tensor.shape} do not match stage input {self.entry.input_shape}"
                    )
                if header.tensor.dtype != "float32":
                    raise RejectedInput(f"features must be float32, not {header.tensor.dtype}")
                tensor = torch.from_numpy(envelope.features(self.max_tensor_bytes))
        except (EnvelopeError, ImageError) as error:
            raise RejectedInput(str(error)) from None
        return Work(envelope=envelope, tensor=tensor, received_at=received_at, wire_bytes=wire_bytes)

    def _image_tensor(self, envelope: Envelope) -> torch.Tensor:
        info = envelope.header.tensor
        if info.kind != "image" or info.codec not in ("jpeg", "png", "raw") or info.dtype != "uint8":
            raise RejectedInput("stage 0 takes images: kind 'image', codec jpeg, png or raw, dtype uint8")
        image = decode_image(envelope.payload, info.codec, info.shape)
        return preprocess(image, self.manifest.input)

    def late_answer(self, work: Work, policy: Policy, now: float) -> Result:
        """A request that waited past its deadline: answered at once, without the stage, with the
        best prediction it carries (degraded) or, before any exit ran, as a timeout."""
        header = work.envelope.header
        reason = f"deadline passed before stage {self.stage_index} ran"
        if header.best is not None:
            return self._result(header, header.best, list(header.hops), reason, policy, now)
        return Result(
            request_id=header.request_id,
            source=header.source,
            outcome="timeout",
            reason=reason,
            latency_ms=round((now - header.created_at) * 1000.0, 3),
            policy_version=policy.version,
            model_id=self.manifest.model_id,
            completed_at=now,
        )

    @torch.no_grad()
    def run(
        self,
        batch: list[Work],
        policy: Policy,
        next_stage_online: bool = True,
        remaining_ms: float | None = None,
        slowdown: float = 1.0,
    ) -> tuple[list[Decision], float]:
        """Run the stage on a batch; returns decisions and the batch's compute time in ms."""
        started = time.perf_counter()
        inputs = torch.stack([work.tensor for work in batch])
        features, output = self.stage(inputs)
        if slowdown > 1.0:
            # An emulated slow device takes `slowdown` x this stage's quiet time for the batch,
            # whatever else the test host is doing at the moment.
            target_ms = slowdown * self.quiet_stage_ms(len(batch))
            spent_ms = (time.perf_counter() - started) * 1000.0
            time.sleep(max(0.0, target_ms - spent_ms) / 1000.0)
        compute_ms = (time.perf_counter() - started) * 1000.0
        batch_run = _BatchRun(
            logits=output.logits,
            probabilities=torch.softmax(output.logits / self.final_entry.temperature, dim=1),
            features=features,
            policy=policy,
            criterion=get_criterion(policy.criterion),
            threshold=policy.threshold(self.stage_index),
            next_stage_online=next_stage_online,
            remaining_ms=remaining_ms,
            compute_ms=compute_ms,
            now=time.time(),
        )
        decisions = []
        for row, work in enumerate(batch):
            deciding = time.perf_counter()
            decision = self._decide(row, work, batch_run)
            decision.cost_ms = (time.perf_counter() - deciding) * 1000.0
            decisions.append(decision)
        return decisions, compute_ms

    def _decide(self, row: int, work: Work, run: _BatchRun) -> Decision:
        """Exit or forward one request of the batch."""
        policy, probabilities, now, remaining_ms = run.policy, run.probabilities, run.now, run.remaining_ms
        temperature = self.final_entry.temperature
        header = work.envelope.header
        history = [
            ExitObservation(logits=torch.log(torch.tensor([p], dtype=torch.float32).clamp_min(1e-12)))
            for p in header.exit_probabilities
        ]
        history.append(ExitObservation(logits=(run.logits[row : row + 1] / temperature)))
        confidence, label = probabilities[row].max(dim=0)
        best = Prediction(label=int(label), confidence=float(confidence), exit_stage=self.final_entry.index)
        hop = Hop(
            stage_index=self.stage_index,
            device=self.device_name,
            queue_ms=round(work.queue_ms, 3),
            compute_ms=round(run.compute_ms, 3),
            wire_bytes=work.wire_bytes,
        )
        hops = [*header.hops, hop]
        reason = None
        if self.is_final:
            kind: Literal["exit", "forward"] = "exit"
        elif run.threshold is not None and float(run.criterion.score(history)[0]) >= run.threshold:
            kind = "exit"
        elif policy.mode != "no-exit" and (
            now >= header.deadline
            or (remaining_ms is not None and now + remaining_ms / 1000.0 > header.deadline)
        ):
            kind, reason = "exit", "deadline"
        elif not run.next_stage_online:
            kind, reason = "exit", "next-stage-offline"
        else:
            kind = "forward"
        if kind == "exit":
            return Decision(
                "exit", work, result=self._result(header, best, hops, reason, policy, now), hops=hops
            )
        try:
            message = self._forward_message(header, hops, best, policy, probabilities[row], run.features[row])
        except (EnvelopeError, ValueError) as error:
            # Cannot hand on (e.g. the header would exceed its limit): answer with what we have.
            result = self._result(header, best, hops, f"cannot-forward: {error}"[:200], policy, now)
            return Decision("exit", work, result=result, hops=hops)
        progress = (
            progress_of(header, best, policy, self.manifest.model_id)
            if header.settle_by is not None
            else None
        )
        return Decision("forward", work, message=message, hops=hops, progress=progress)

    def _forward_message(
        self,
        header: EnvelopeHeader,
        hops: list[Hop],
        best: Prediction,
        policy: Policy,
        probabilities: torch.Tensor,
        features: torch.Tensor,
    ) -> bytes:
        next_header = header.model_copy(
            update={
                "stage_index": self.stage_index + 1,
                "hops": hops,
                "best": best,
                "policy_version": policy.version,
                "exit_probabilities": [
                    *header.exit_probabilities,
                    [round(float(p), 6) for p in probabilities],
                ],
                "tensor": TensorInfo(
                    kind="features",
                    codec=self.codec_name,
                    dtype="float32",
                    shape=list(features.shape),
                    payload_bytes=0,
                    crc32=0,
                ),
            }
        )
        payload = self.codec.encode(features.numpy().astype(np.float32))
        return encode_envelope(next_header, payload)

    def _result(
        self,
        header: EnvelopeHeader,
        best: Prediction,
        hops: list[Hop],
        reason: str | None,
        policy: Policy,
        now: float,
    ) -> Result:
        return Result(
            request_id=header.request_id,
            source=header.source,
            outcome="degraded" if reason else "result",
            label=best.label,
            class_name=self.manifest.input.class_names[best.label],
            confidence=round(best.confidence, 6),
            exit_stage=best.exit_stage,
            degraded=reason is not None,
            reason=reason,
            latency_ms=round((now - header.created_at) * 1000.0, 3),
            hops=[HopReport(**hop.model_dump()) for hop in hops],
            policy_version=policy.version,
            model_id=self.manifest.model_id,
            completed_at=now,
        )
