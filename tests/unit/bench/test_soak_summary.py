"""Soak memory flatness: every process, the client measured once its bounded stores are full."""

from __future__ import annotations

from distree_mqtt.bench.soak import rss_summary


def _samples(client: list[int], device: list[int]) -> list[dict[str, float]]:
    return [
        {"t": 30.0 * i, "client": c, "device-0": d}
        for i, (c, d) in enumerate(zip(client, device, strict=True))
    ]


def test_a_client_that_fills_its_ledger_and_then_stays_flat_is_flat() -> None:
    # The ledger fills in the first 200 s (client 400 -> 600 MiB), then nothing grows.
    client = [
        400,
        450,
        500,
        550,
        600,
        600,
        605,
        600,
        602,
        601,
        603,
        600,
        600,
        601,
        602,
        600,
        601,
        600,
        600,
        602,
    ]
    summary = rss_summary(_samples(client, [300] * 20), ["client", "device-0"], 10.0, ledger_full_s=200.0)
    assert summary["client_since_s"] == 230.0 and summary["flat"]
    assert summary["growth"]["client"]["start_kib"] == 602  # the first sample from 230 s on (240 s)


def test_growth_after_warm_up_in_any_process_is_not_flat() -> None:
    leaking = [300 + 10 * i for i in range(20)]  # 300 -> 490: a service that keeps growing
    summary = rss_summary(_samples([400] * 20, leaking), ["client", "device-0"], 10.0, ledger_full_s=200.0)
    assert not summary["flat"] and summary["growth"]["device-0"]["ratio"] > 1.1
    still_filling = [400 + 20 * i for i in range(20)]  # a client that never stops growing
    summary = rss_summary(_samples(still_filling, [300] * 20), ["client", "device-0"], 10.0, 200.0)
    assert not summary["flat"]
