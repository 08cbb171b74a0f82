"""configs/mosquitto/acl grants every service of configs/deployments the topics it uses."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from distree_mqtt.bundle import load_manifest
from distree_mqtt.deployment import bundle_dir
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENTS = sorted((ROOT / "configs" / "deployments").glob("*/*/*.yaml"))


def _acl() -> dict[str, set[tuple[str, str]]]:
    """user -> {(access, topic)}; `readwrite` counts as both."""
    rules: dict[str, set[tuple[str, str]]] = defaultdict(set)
    user = None
    for line in (ROOT / "configs" / "mosquitto" / "acl").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        assert words[0] in ("user", "topic"), f"unexpected ACL line {line!r}"
        if words[0] == "user":
            user = words[1]
            assert user not in rules, f"user {user} appears twice"
            rules[user] = set()
            continue
        assert user is not None, "a rule for anonymous clients"
        access, topic = words[1:3]
        for kind in ("read", "write") if access == "readwrite" else (access,):
            rules[user].add((kind, topic))
    return rules


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_each_deployed_service_has_its_acl_user_and_topics(path: Path) -> None:
    settings = load_settings(path)
    user = urlsplit(settings.broker.url).username
    rules = _acl()
    assert user in rules, f"{path}: broker user {user} has no block in configs/mosquitto/acl"
    granted = rules[user]
    topics = Topics(settings.topic_prefix, settings.pipeline)
    if settings.role == "device":
        options = settings.device
        assert options.device_id == user, "a device's username is its device id"
        needed = {
            ("read", topics.stage_input(options.stage_index)),
            ("write", topics.status(user)),
            ("write", topics.telemetry(user)),
            ("write", topics.device_info(user)),
            ("read", topics.policy),
        }
        stages = len(load_manifest(bundle_dir(settings, "device")).stages)
        forward = ("write", topics.stage_input(options.stage_index + 1))
        assert (forward in granted) == (options.stage_index < stages - 1), "forwards to the next stage only"
        progress = ("write", f"{topics.root}/progress/+")
        assert (progress in granted) == (forward in granted), "progress comes from forwarding devices"
    elif settings.role == "camera":
        camera = settings.camera.camera_id
        needed = {
            ("write", topics.stage_input(0)),
            ("read", topics.results(camera)),
            ("read", topics.progress(camera)),
            ("write", topics.status(camera)),
            ("write", f"{topics.camera(camera)}/#"),
        }
    else:
        assert settings.role == "orchestrator"
        needed = {("write", topics.policy), ("read", topics.policy), ("read", topics.all_control_set)}
    assert needed <= granted, f"{path}: {user} lacks {sorted(needed - granted)}"


def test_only_orchestrators_may_write_a_policy() -> None:
    writers = {
        user
        for user, rules in _acl().items()
        if any(r[0] == "write" and "control/policy" in r[1] for r in rules)
    }
    assert writers == {"home-orchestrator", "factory-orchestrator"}
    everything = {
        user
        for user, rules in _acl().items()
        if any(r[1].endswith("/#") and r[0] == "write" and r[1].count("/") < 3 for r in rules)
    }
    assert not everything, f"users with write access to a whole pipeline: {everything}"
