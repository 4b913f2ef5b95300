"""One Python SDK worker (started by `fleetstream.runtime.worker_pool`), with cheap state-cache sizing
and fewer garbage collections.

    python -m fleetstream.runtime.sdk_worker CONTROL_URL WORKER_ID STATE_CACHE_BYTES

Beam's SDK worker weighs every value it puts in its user-state cache with
`apache_beam.runners.worker.statecache.get_deep_size` (objsize 0.7). That
function builds a fresh exclusion set from the globals of every loaded module
(about 1,900 in a worker) on *each* call: ~1.4 ms even for an empty list. A
ReadModifyWriteState write puts twice (clear, then append), a cache miss
once more, so on the streaming job it cost several milliseconds of CPU per
message (py-spy: ~32 % of the worker's samples under `StateCache.put`).

`deep_size` below gives the same kind of estimate (the sum of `sys.getsizeof`
over the value's object graph, shared objects such as types, modules and
functions excluded) without the module scan and with a plain loop, so a
typical per-vehicle state is sized in microseconds. The cache's weights stay
an approximation of memory use, as they were.

Gap it fills: Beam's `statecache.get_deep_size` rescans every loaded module per call
and the worker keeps CPython's default collector thresholds. No upstream issue is cited.
TODO: remove once Beam's state cache sizes values without the module scan (then start
the workers with Beam's own `sdk_worker_main` from `worker_pool`).
"""
from __future__ import annotations

import gc
import logging
import sys
import types
from contextlib import contextmanager
from typing import Any, Iterator

_ATOMIC = frozenset({str, bytes, int, float, bool, complex, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset})
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, types.CodeType)
#: objects visited at most per value; past that the rest is not counted (the
#: cache then under-weighs a huge value, which the LRU still bounds by count)
MAX_OBJECTS = 200_000
#: CPython's cyclic collector thresholds in the worker (default 700, 10, 10). Mapping makes
#: ~45 short-lived dicts per message, so the default ran a young collection every ~15
#: messages and an older one every ~150, each walking objects the state cache keeps alive;
#: with these the streaming job's Python CPU per message fell from 0.29 to 0.21 ms
#: (docs/benchmarks.md). Reference counting still frees everything acyclic at once.
GC_THRESHOLDS = (50_000, 20, 20)
#: containers larger than this are weighed by a sample of SAMPLE items
SAMPLE_ABOVE = 16
SAMPLE = 8


def deep_size(*objs: Any) -> int:
    """Approximate deep size in bytes of `objs` (shared objects excluded); at least 8.

    A container of more than SAMPLE_ABOVE items is weighed by SAMPLE of them,
    scaled up: a keyed step's state of thousands of entries (a vehicle shard's
    order buffers and duplicate windows) is sized in bounded time, not walked
    whole on every cache write.
    """
    getsizeof = sys.getsizeof
    seen: set[int] = set()
    pending: list[tuple[Any, float]] = [(obj, 1.0) for obj in objs]
    total = 0.0
    visited = 0
    while pending and visited < MAX_OBJECTS:
        obj, weight = pending.pop()
        ident = id(obj)
        if ident in seen:
            continue
        seen.add(ident)
        visited += 1
        kind = type(obj)
        if kind in _ATOMIC:
            total += getsizeof(obj) * weight
            continue
        if kind in _CONTAINERS or isinstance(obj, tuple):
            total += getsizeof(obj) * weight
            _push_items(pending, obj, weight)
        elif kind is dict:
            total += getsizeof(obj) * weight
            _push_items(pending, obj.keys(), weight)
            _push_items(pending, obj.values(), weight)
        elif isinstance(obj, _SHARED):
            continue
        else:
            try:
                total += getsizeof(obj) * weight
            except Exception:  # noqa: BLE001 - some extension objects refuse
                total += 64 * weight
            _push_items(pending, gc.get_referents(obj), weight)
    return max(int(total), 8)


def _push_items(pending: list[tuple[Any, float]], items: Any, weight: float) -> None:
    """Queue a container's items, or for a large one an evenly spaced sample, scaled."""
    count = len(items)
    if count <= SAMPLE_ABOVE:
        pending.extend((item, weight) for item in items)
        return
    sequence = items if isinstance(items, (list, tuple)) else list(items)
    step = count / SAMPLE
    pending.extend((sequence[int(i * step)], weight * step) for i in range(SAMPLE))


@contextmanager
def fewer_collections() -> Iterator[None]:
    """While the block runs (a job built and run in this process, like the replay's single
    worker): CPython's collector at GC_THRESHOLDS, and the objects that exist before it
    (Beam's and its dependencies' modules, ~200,000 objects) left out of its collections
    (`gc.freeze`): each full collection walked them all, 0.1-0.4 s apiece. Then as it was."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def install_fast_state_cache_sizing() -> None:
    """Make Beam's state cache weigh values with `deep_size`."""
    from apache_beam.runners.worker import statecache

    statecache.get_deep_size = deep_size


def main(argv: list[str] | None = None) -> None:
    control_url, worker_id, cache_bytes, *rest = argv if argv is not None else sys.argv[1:]
    data_buffer_time_limit_ms = int(rest[0]) if rest else -1
    logging.getLogger().setLevel(logging.INFO)
    install_fast_state_cache_sizing()
    gc.set_threshold(*GC_THRESHOLDS)
    from apache_beam.runners.worker.sdk_worker import SdkHarness

    SdkHarness(control_url, worker_id=worker_id, state_cache_size=int(cache_bytes),
               data_buffer_time_limit_ms=data_buffer_time_limit_ms).run()


if __name__ == "__main__":
    main()
