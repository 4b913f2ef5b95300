"""The SDK worker's state-cache sizing (`deep_size`)."""
from __future__ import annotations

import gc
import sys

from fleetstream.runtime.sdk_worker import GC_THRESHOLDS, SAMPLE_ABOVE, deep_size, fewer_collections


def _walked(obj) -> int:
    """Every object of a tree of dicts, lists, tuples and atoms, summed (no sharing)."""
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        return size + sum(_walked(k) + _walked(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return size + sum(_walked(item) for item in obj)
    return size


def test_a_small_value_is_weighed_whole() -> None:
    value = {"V1": ([(1, "a" * 10)], {"id-1": 5}), "V2": ([], {})}
    assert len(value) <= SAMPLE_ABOVE
    assert deep_size(value) == _walked(value)


def test_a_large_value_is_weighed_by_a_sample_close_to_its_whole_size() -> None:
    # no small ints: Python shares those, so a walk that counts every reference over-counts
    shard = {f"VIN{v:05d}": ([(10**6 + i, f"message-{v}-{i}" * (1 + i % 3)) for i in range(20)],
                             {f"id-{v}-{i}": 10**9 + v * 1000 + i for i in range(300)})
             for v in range(500)}
    whole = _walked(shard)
    assert 0.8 * whole <= deep_size(shard) <= 1.2 * whole


def test_shared_objects_are_counted_once() -> None:
    text = "x" * 1000
    assert deep_size([text, text]) == sys.getsizeof([text, text]) + sys.getsizeof(text)


def test_fewer_collections_raises_the_thresholds_freezes_and_restores_both() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        try:
            with fewer_collections():
                raise RuntimeError("a job that fails")
        except RuntimeError:
            pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
