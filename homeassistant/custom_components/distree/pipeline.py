"""One distree pipeline seen from Home Assistant: which model it runs, and requests to it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError

from .const import GRACE_MS, MAX_IMAGE_BYTES, SOURCE
from .envelope import ImageFormatError, build_image_envelope

_LOGGER = logging.getLogger(__name__)


class DistreePipeline:
    """Tracks the pipeline's retained device descriptors; sends images to stage 0."""

    def __init__(self, hass: HomeAssistant, topic_prefix: str, pipeline: str, deadline_ms: int) -> None:
        self.hass = hass
        self.root = f"{topic_prefix}/{pipeline}"
        self.deadline_ms = deadline_ms
        self.descriptors: dict[str, dict[str, Any]] = {}
        self.status: dict[str, str] = {}
        self._unsubscribe: list[Callable[[], None]] = []

    async def async_start(self) -> None:
        self._unsubscribe.append(
            await mqtt.async_subscribe(self.hass, f"{self.root}/devices/+", self._on_descriptor, qos=1)
        )
        self._unsubscribe.append(
            await mqtt.async_subscribe(self.hass, f"{self.root}/status/+", self._on_status, qos=1)
        )

    @callback
    def async_stop(self) -> None:
        while self._unsubscribe:
            self._unsubscribe.pop()()

    @callback
    def _on_descriptor(self, message: mqtt.ReceiveMessage) -> None:
        device = message.topic.rsplit("/", 1)[-1]
        try:
            descriptor = json.loads(message.payload) if message.payload else None
        except ValueError:
            descriptor = None
        if isinstance(descriptor, dict) and isinstance(descriptor.get("model_hash"), str):
            self.descriptors[device] = descriptor
        else:
            self.descriptors.pop(device, None)

    @callback
    def _on_status(self, message: mqtt.ReceiveMessage) -> None:
        self.status[message.topic.rsplit("/", 1)[-1]] = str(message.payload)

    def model_hash(self) -> str:
        """The bundle hash stage 0 serves (devices refuse requests for another model)."""
        stage_zero = {
            device: descriptor
            for device, descriptor in self.descriptors.items()
            if descriptor.get("stage_index") == 0
        }
        online = [d for device, d in stage_zero.items() if self.status.get(device) == "online"]
        candidates = online or list(stage_zero.values())
        if not candidates:
            raise HomeAssistantError(
                f"no stage-0 device has announced itself on {self.root}/devices/+; "
                "is the pipeline running, and are the topic prefix and pipeline name right?"
            )
        return str(candidates[0]["model_hash"])

    async def async_classify(self, image: bytes, deadline_ms: int | None = None) -> dict[str, Any]:
        """Send one JPEG/PNG image through the pipeline and wait for its result."""
        if len(image) > MAX_IMAGE_BYTES:
            raise HomeAssistantError(
                f"the image is {len(image)} bytes; devices accept at most {MAX_IMAGE_BYTES}"
            )
        deadline_ms = deadline_ms or self.deadline_ms
        request_id = uuid.uuid4().hex[:20]
        reply_topic = f"{self.root}/reply/{SOURCE}-{request_id}"
        now = time.time()
        try:
            envelope = build_image_envelope(
                image,
                request_id=request_id,
                source=SOURCE,
                model_hash=self.model_hash(),
                created_at=now,
                deadline=now + deadline_ms / 1000,
                reply_to=reply_topic,
            )
        except ImageFormatError as error:
            raise HomeAssistantError(f"cannot send this image: {error}") from None

        answer: asyncio.Future[dict[str, Any]] = self.hass.loop.create_future()

        @callback
        def on_reply(message: mqtt.ReceiveMessage) -> None:
            try:
                result = json.loads(message.payload)
            except ValueError:
                return
            if isinstance(result, dict) and result.get("request_id") == request_id and not answer.done():
                answer.set_result(result)

        unsubscribe = await mqtt.async_subscribe(self.hass, reply_topic, on_reply, qos=1)
        try:
            await mqtt.async_publish(self.hass, f"{self.root}/stage/0/in", envelope, qos=1, encoding=None)
            async with asyncio.timeout((deadline_ms + GRACE_MS) / 1000):
                return await answer
        except TimeoutError:
            raise HomeAssistantError(
                f"no result from pipeline {self.root} within {deadline_ms + GRACE_MS} ms "
                "(deadline plus grace); are its devices online?"
            ) from None
        finally:
            unsubscribe()
