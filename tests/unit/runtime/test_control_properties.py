"""The control-set parser under Hypothesis: any setting name and payload ends in a new policy
or exactly one one-line error on the errors topic, never in an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distree_mqtt.orchestrator.service import OrchestratorService
from distree_mqtt.settings import load_settings
from distree_mqtt.topics import Topics
from tests.fakes import MemoryTransport

TOPICS = Topics(pipeline="properties")
SETTINGS = ["latency_target_ms", "mode", "static_thresholds", "criterion"]


@pytest.fixture(scope="module")
def orchestrator():
    transport = MemoryTransport()
    settings_ = load_settings(pipeline="properties")
    service = OrchestratorService(settings_, transport=transport)
    service.start()
    yield service, transport
    service.stop()


@given(
    setting=st.one_of(st.sampled_from(SETTINGS), st.text(min_size=1, max_size=20)),
    payload=st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64).map(str.encode),
        st.floats().map(lambda number: repr(number).encode()),
        st.lists(st.one_of(st.none(), st.floats(), st.text(max_size=3)), max_size=4).map(
            lambda values: json.dumps(values).encode()
        ),
    ),
)
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_control_set_parser_answers_anything_with_a_policy_or_one_line_error(
    orchestrator, setting: str, payload: bytes
) -> None:
    service, transport = orchestrator
    version = service.policy.version
    errors_before = len(transport.on(TOPICS.errors))
    transport.deliver(TOPICS.control_set(setting), payload)  # raises if a handler does
    errors = transport.on(TOPICS.errors)[errors_before:]
    if service.policy.version == version:
        assert len(errors) == 1
        reason = json.loads(errors[0])["reason"]
        assert "\n" not in reason and 0 < len(reason) <= 300
    else:
        assert errors == [] and service.policy.version == version + 1
