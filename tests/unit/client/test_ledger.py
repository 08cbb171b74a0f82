"""The client's ledger: every request counted once, second outcomes as duplicates."""

from __future__ import annotations

import pytest

from distree_mqtt.client.ledger import Ledger


def test_each_request_settles_once_and_later_outcomes_are_duplicates() -> None:
    ledger = Ledger()
    for index in range(5):
        ledger.sent(f"r{index}", at=100.0 + index)
    assert ledger.settle("r0", "result", at=100.1, latency_ms=100.0)
    assert ledger.settle("r1", "degraded", at=101.2, latency_ms=200.0)
    assert ledger.settle("r2", "rejected", at=102.0)
    assert ledger.settle("r3", "timeout", at=103.5)
    assert ledger.lose("r4", at=110.0)
    assert ledger.pending == 0
    assert not ledger.settle("r0", "result", at=100.2)  # QoS 1 redelivery
    assert not ledger.settle("r4", "degraded", at=111.0)  # an answer after the client gave up
    assert not ledger.lose("r1", at=111.0)  # already answered: not lost
    assert not ledger.settle("never-sent", "result", at=1.0)
    summary = ledger.summary()
    assert summary["sent"] == 5
    assert summary["outcomes"] == {"result": 1, "degraded": 1, "timeout": 1, "rejected": 1}
    assert (summary["lost"], summary["duplicates"], summary["unknown"]) == (1, 3, 1)
    assert summary["degraded_share"] == pytest.approx(0.2)
    records = ledger.records()
    assert [r.outcome for r in records] == ["result", "degraded", "rejected", "timeout", "lost"]
    assert records[0].extra == ["result"] and records[4].extra == ["degraded"]
    assert sorted(ledger.latencies_ms()) == [100.0, 200.0]


def test_pending_counts_the_unsettled_and_unknown_outcomes_are_refused() -> None:
    ledger = Ledger()
    ledger.sent("a", at=1.0)
    ledger.sent("b", at=2.0)
    ledger.settle("a", "result", at=1.5)
    assert ledger.pending == 1
    with pytest.raises(ValueError, match="unknown outcome"):
        ledger.settle("b", "maybe", at=3.0)


def test_records_are_bounded_but_totals_stay_exact() -> None:
    ledger = Ledger(capacity=3)
    for index in range(10):
        ledger.sent(f"r{index}", at=float(index))
    assert len(ledger.records()) == 3 and ledger.sent_count == 10
    assert not ledger.settle("r0", "result", at=20.0)  # forgotten: counted as unknown
    assert ledger.unknown == 1 and ledger.pending == 10


def test_a_redelivered_copy_of_the_answer_is_not_a_second_answer() -> None:
    ledger = Ledger()
    ledger.sent("r1", 0.0)
    assert ledger.settle("r1", "result", 1.0, 5.0, fingerprint="abc")
    assert not ledger.settle("r1", "result", 1.1, 5.0, fingerprint="abc")  # QoS 1 resend
    assert (ledger.redelivered, ledger.duplicates) == (1, 0)
    assert not ledger.settle("r1", "degraded", 1.2, 6.0, fingerprint="def")  # a different answer
    assert (ledger.redelivered, ledger.duplicates) == (1, 1)
    assert ledger.summary()["redelivered"] == 1
