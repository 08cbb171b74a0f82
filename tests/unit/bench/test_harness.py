"""The benchmark load generator does not pause itself for full garbage collections."""

from __future__ import annotations

import gc

from distree_mqtt.bench.harness import generator_without_gc_pauses


def test_full_collections_are_held_while_generating_and_restored_after() -> None:
    before = gc.get_threshold()
    with generator_without_gc_pauses():
        young, middle, old = gc.get_threshold()
        assert (young, middle) == before[:2]  # young collections go on
        assert old >= 1 << 30  # a full collection would need a billion middle ones
        assert gc.isenabled()
    assert gc.get_threshold() == before


def test_thresholds_are_restored_when_the_load_fails() -> None:
    before = gc.get_threshold()
    try:
        with generator_without_gc_pauses():
            raise RuntimeError("broker went away")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
