"""The benchmark load generator does not pause itself for full garbage collections."""

from __future__ import annotations

import gc
import weakref
from concurrent.futures import Future

from distree_mqtt.bench.harness import collect, generator_without_gc_pauses
from distree_mqtt.client import RequestRejected, RequestTimeout
from distree_mqtt.protocol import Result


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


def test_collecting_failed_requests_leaves_no_garbage_cycles() -> None:
    rejected = Result(request_id="r1", source="s", outcome="rejected", reason="queue full")
    futures: list[Future[Result]] = [Future() for _ in range(3)]
    futures[0].set_result(Result(request_id="r0", source="s", outcome="result", label=3))
    futures[1].set_exception(RequestRejected(rejected))
    futures[2].set_exception(RequestTimeout("r2", 500.0))
    alive = [weakref.ref(future) for future in futures]
    gc.disable()
    try:
        outcomes = collect([(0.0, 3, future) for future in futures])
        assert [o.kind for o in outcomes] == ["result", "rejected", "timeout"]
        del futures
        # Reference counting alone frees every future: nothing waits for a full collection.
        assert all(ref() is None for ref in alive)
    finally:
        gc.enable()
