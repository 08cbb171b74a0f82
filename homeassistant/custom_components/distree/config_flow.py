"""Config flow: which pipeline (topic prefix and name) and the default deadline."""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigFlow, ConfigFlowResult

from .const import (
    CONF_DEADLINE_MS,
    CONF_PIPELINE,
    CONF_TOPIC_PREFIX,
    DEFAULT_DEADLINE_MS,
    DEFAULT_PIPELINE,
    DEFAULT_TOPIC_PREFIX,
    DOMAIN,
)


def _valid_prefix(prefix: str) -> bool:
    return bool(prefix) and prefix == prefix.strip("/") and not any(c in prefix for c in "+#\x00")


class DistreeConfigFlow(ConfigFlow, domain=DOMAIN):
    VERSION = 1

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        errors: dict[str, str] = {}
        if user_input is not None:
            pipeline = user_input[CONF_PIPELINE].strip()
            prefix = user_input[CONF_TOPIC_PREFIX].strip()
            if not _valid_prefix(prefix):
                errors[CONF_TOPIC_PREFIX] = "invalid_topic_prefix"
            if not _valid_prefix(pipeline) or "/" in pipeline:
                errors[CONF_PIPELINE] = "invalid_pipeline"
            if not errors:
                await self.async_set_unique_id(f"{prefix}/{pipeline}")
                self._abort_if_unique_id_configured()
                return self.async_create_entry(
                    title=f"distree {pipeline}",
                    data={
                        CONF_PIPELINE: pipeline,
                        CONF_TOPIC_PREFIX: prefix,
                        CONF_DEADLINE_MS: user_input[CONF_DEADLINE_MS],
                    },
                )
        defaults = user_input or {}
        schema = vol.Schema(
            {
                vol.Required(CONF_PIPELINE, default=defaults.get(CONF_PIPELINE, DEFAULT_PIPELINE)): str,
                vol.Required(
                    CONF_TOPIC_PREFIX, default=defaults.get(CONF_TOPIC_PREFIX, DEFAULT_TOPIC_PREFIX)
                ): str,
                vol.Required(
                    CONF_DEADLINE_MS, default=defaults.get(CONF_DEADLINE_MS, DEFAULT_DEADLINE_MS)
                ): vol.All(vol.Coerce(int), vol.Range(min=10, max=600_000)),
            }
        )
        return self.async_show_form(step_id="user", data_schema=schema, errors=errors)
