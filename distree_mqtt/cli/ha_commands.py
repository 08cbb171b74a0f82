"""`distree ha show | publish | remove`: the pipeline's Home Assistant discovery by hand."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from distree_mqtt.cli.runtime_commands import _common, _settings
from distree_mqtt.settings import DistreeSettings

# How long `remove` waits for its marker, which arrives after every retained config.
RETAINED_WAIT_S = 10.0


def register(commands: Any) -> None:
    ha = commands.add_parser(
        "ha",
        help="Home Assistant MQTT discovery: show, publish or remove it",
        description="The orchestrator publishes discovery itself; these commands show the payloads, "
        "publish them without an orchestrator, or remove everything this pipeline announced.",
    )
    actions = ha.add_subparsers(dest="action", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="print the pipeline's discovery messages (topic and JSON)")
    _common(show)
    show.add_argument("--bundle", type=Path, help="bundle the pipeline runs (for its stage count)")
    show.add_argument("--legacy", action="store_true", default=None, help="per-component format")
    show.set_defaults(handler=run_show)

    publish = actions.add_parser("publish", help="publish the pipeline's discovery once (retained)")
    _common(publish)
    publish.add_argument("--bundle", type=Path, help="bundle the pipeline runs (for its stage count)")
    publish.add_argument("--legacy", action="store_true", default=None, help="per-component format")
    publish.set_defaults(handler=run_publish)

    remove = actions.add_parser(
        "remove",
        help="remove every discovery config this pipeline published (empty retained messages)",
        description="Clears the pipeline's, its devices' and its cameras' configs in both formats: "
        "those found retained on the broker under the pipeline's node id, and the pipeline's own.",
    )
    _common(remove)
    remove.add_argument("--bundle", type=Path, help="bundle the pipeline runs (for its stage count)")
    remove.add_argument(
        "--wait-s",
        type=float,
        default=RETAINED_WAIT_S,
        help=f"how long to wait for the broker's retained configs (default {RETAINED_WAIT_S:g} s)",
    )
    remove.set_defaults(handler=run_remove)


def _ha_settings(args: argparse.Namespace) -> DistreeSettings:
    legacy = getattr(args, "legacy", None)
    return _settings(
        args,
        orchestrator={"bundle": args.bundle},
        homeassistant={"legacy_discovery": legacy},
    )


def _pipeline_messages(settings: DistreeSettings) -> list[tuple[str, bytes]]:
    from distree_mqtt.bundle import load_manifest
    from distree_mqtt.homeassistant.entities import pipeline_discovery
    from distree_mqtt.reference import reference_bundle
    from distree_mqtt.topics import Topics

    manifest = load_manifest(settings.orchestrator.bundle or reference_bundle("mnist"))
    home_assistant = settings.homeassistant
    discovery = pipeline_discovery(
        Topics(settings.topic_prefix, settings.pipeline),
        len(manifest.stages),
        node_id=home_assistant.node_id,
        name=home_assistant.device_name,
        model_id=manifest.model_id,
        origin=home_assistant.origin(),
    )
    return discovery.messages(home_assistant.discovery_prefix, legacy=home_assistant.legacy_discovery)


def run_show(args: argparse.Namespace) -> int:
    for topic, payload in _pipeline_messages(_ha_settings(args)):
        print(json.dumps({"topic": topic, "payload": json.loads(payload)}), flush=True)
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from distree_mqtt.transport import MqttTransport

    settings = _ha_settings(args)
    messages = _pipeline_messages(settings)
    transport = MqttTransport(settings.broker, client_id=f"distree-ha-{time.monotonic_ns():x}")
    transport.start()
    try:
        for topic, payload in messages:
            transport.publish_and_wait(topic, payload, retain=True)
    finally:
        transport.stop()
    print(f"published {len(messages)} discovery config(s)", file=sys.stderr)
    return 0


def retained_configs_of(retained: dict[str, bytes], discovery_prefix: str, node_id: str) -> list[str]:
    """Config topics among `retained` that belong to the node or its devices and cameras."""
    owned = []
    for topic, payload in retained.items():
        levels = (
            topic[len(discovery_prefix) + 1 :].split("/") if topic.startswith(f"{discovery_prefix}/") else []
        )
        if not payload or levels[-1:] != ["config"] or len(levels) not in (3, 4):
            continue
        node = levels[1]
        if node != node_id and not node.startswith(f"{node_id}_"):
            continue
        try:
            origin = json.loads(payload).get("o") or json.loads(payload).get("origin") or {}
        except (ValueError, AttributeError):
            continue
        if isinstance(origin, dict) and origin.get("name") == "distree-mqtt":
            owned.append(topic)
    return sorted(owned)


def run_remove(args: argparse.Namespace) -> int:
    from distree_mqtt.homeassistant.entities import pipeline_node_id
    from distree_mqtt.topics import Topics
    from distree_mqtt.transport import Message, MqttTransport

    settings = _ha_settings(args)
    home_assistant = settings.homeassistant
    prefix = home_assistant.discovery_prefix
    node_id = pipeline_node_id(Topics(settings.topic_prefix, settings.pipeline), home_assistant.node_id)
    retained: dict[str, bytes] = {}
    marked = threading.Event()

    def collect(message: Message) -> None:
        retained[message.topic] = message.payload

    client_id = f"distree-ha-{time.monotonic_ns():x}"
    # Not a discovery topic (no `config` level), so Home Assistant ignores it.
    marker = f"{prefix}/distree_remove/{client_id}"
    transport = MqttTransport(settings.broker, client_id=client_id)
    transport.subscribe(f"{prefix}/device/+/config", collect)
    transport.subscribe(f"{prefix}/+/+/+/config", collect)
    transport.subscribe(marker, lambda _: marked.set())
    transport.start()
    try:
        # The broker sends a subscription's retained messages before anything published after
        # it, so once the marker is back every retained config is here.
        transport.publish_and_wait(marker, b"")
        if not marked.wait(args.wait_s):
            raise RuntimeError(
                f"could not read back {prefix}/#: the broker user needs read and write access "
                "to the discovery topics (an administrator under the example ACL)"
            )
        topics = set(retained_configs_of(dict(retained), prefix, node_id))
        # The pipeline's own topics in both formats, even where this broker lost them.
        for legacy in (False, True):
            legacy_settings = settings.model_copy(
                update={"homeassistant": home_assistant.model_copy(update={"legacy_discovery": legacy})}
            )
            topics.update(topic for topic, _ in _pipeline_messages(legacy_settings))
        for topic in sorted(topics):
            transport.publish_and_wait(topic, b"", retain=True)
    finally:
        transport.stop()
    print(f"removed {len(topics)} discovery config(s) of node {node_id}", file=sys.stderr)
    return 0
