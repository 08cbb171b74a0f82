"""A short fuzz campaign against live services on a real Mosquitto (`distree bench fuzz`)."""

from __future__ import annotations

from typing import Any

import pytest

from distree_mqtt.bench.fuzz import run_fuzz_campaign
from distree_mqtt.broker import mosquitto_available

SUBSCRIBED = {
    "stage/0/in",
    "stage/1/in",
    "stage/2/in",
    "control/set/<setting>",
    "control/policy",
    "status/<id>",
    "devices/<id>",
    "telemetry/<id>",
    "homeassistant/status",
    "results/<source>",
}


@pytest.fixture(scope="module")
def campaign() -> dict[str, Any]:
    if mosquitto_available() is None:
        pytest.fail("integration tests need mosquitto (apt-get install mosquitto)")
    return run_fuzz_campaign(size="short", seed=0, camera=True)


def test_no_process_exits_and_memory_stays_bounded(campaign) -> None:
    assert campaign["crashes"] == 0, campaign["exited"]
    assert campaign["rss"]["bounded"], campaign["rss"]["growth"]


def test_every_subscribed_topic_and_stage_case_is_exercised(campaign) -> None:
    topics = campaign["topics"]
    assert set(topics) == SUBSCRIBED
    assert all(row["inputs"] > 0 for row in topics.values())
    stage_cases = set(topics["stage/0/in"]["cases"])
    for case in ("truncated", "wrong_version", "invalid_header_json", "shape_bomb", "dtype_mismatch"):
        assert case in stage_cases
    for case in ("wrong_model_hash", "deadline_years_ahead", "oversized", "image_bomb", "non_utf8_source"):
        assert case in stage_cases
    assert {"non_finite_features", "decompression_bomb"} <= set(topics["stage/1/in"]["cases"])


def test_every_rejected_input_has_its_entries_on_errors(campaign) -> None:
    for name, row in campaign["topics"].items():
        assert row["error_entries_seen"] == row["error_entries_expected"], (name, row)
    assert campaign["errors_from_valid_traffic"] == 0


def test_valid_requests_from_hostile_sources_are_answered(campaign) -> None:
    for stage in range(3):
        row = campaign["topics"][f"stage/{stage}/in"]
        assert row["answered_expected"] > 0 and row["answered_seen"] == row["answered_expected"]


def test_valid_traffic_is_answered_correctly_during_and_after(campaign) -> None:
    valid = campaign["valid_traffic"]
    assert valid["wrong"] == []
    for phase in ("warmup", "during", "after"):
        counts = valid["by_phase"][phase]
        assert counts["sent"] > 0 and counts["correct"] == counts["sent"], (phase, counts)


def test_devices_keep_the_last_valid_policy_and_the_garbage_is_cleaned_up(campaign) -> None:
    policy = campaign["policy"]
    assert policy["devices_kept_valid_policy"], policy
    assert policy["retained_after_cleanup_valid"] and policy["devices_on_it"], policy


def test_device_counters_count_every_stage_rejection(campaign) -> None:
    for stage in range(3):
        rejected = campaign["topics"][f"stage/{stage}/in"]["expected"]["rejected"]
        assert campaign["service_counters"][f"fuzz-dev{stage}"]["rejected"] == rejected
    camera = campaign["service_counters"]["fuzz-cam"]
    assert camera["invalid_results"] > 0


def test_the_orchestrator_keeps_stepping(campaign) -> None:
    assert campaign["orchestrator_state_with_ghosts"] > 0
    assert campaign["orchestrator_state_after_fuzz"] > 0


def test_no_topic_is_made_from_an_unescaped_client_string(campaign) -> None:
    assert campaign["topics_seen"] > 20
    assert campaign["topic_violations"] == []
