"""Constants of the distree integration."""

from __future__ import annotations

DOMAIN = "distree"

CONF_PIPELINE = "pipeline"
CONF_TOPIC_PREFIX = "topic_prefix"
CONF_DEADLINE_MS = "deadline_ms"

DEFAULT_PIPELINE = "default"
DEFAULT_TOPIC_PREFIX = "distree"
DEFAULT_DEADLINE_MS = 2000

SERVICE_CLASSIFY = "classify"
ATTR_CAMERA = "camera"
ATTR_DEADLINE_MS = "deadline_ms"
ATTR_CONFIG_ENTRY_ID = "config_entry_id"

EVENT_RESULT = "distree_result"
# `source` of our requests: results also go to <prefix>/<pipeline>/results/homeassistant.
SOURCE = "homeassistant"
# Wait this long past the deadline before giving up (the devices answer by the deadline).
GRACE_MS = 1000
# Devices reject larger stage inputs unread (their default max_message_bytes).
MAX_IMAGE_BYTES = 4 * 1024 * 1024 - 16 * 1024
