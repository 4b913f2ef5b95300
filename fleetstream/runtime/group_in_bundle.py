"""Collect what one bundle holds into lists: regrouped by a key, or one list per bundle.

    shard_lists = batches | GroupBatchesInBundle(shard_of)   # [item, ...] -> (key, [item, ...])
    batches = values | BatchInBundle()                       # v -> [v, ...]
    values = batches | Unbatch()                             # [v, ...] -> v, ...

No shuffle, no state: the step fused after its producer collects what one bundle holds
and emits each group, in arrival order, when the bundle finishes (stamped with the
earliest of its elements' timestamps, which the bundle's watermark hold keeps on time),
or, with `max_items`, every group as soon as they hold that many items together (a batch
runner's bundle can be the whole input). The steps after it then pay the runner's
per-element cost (the hand-over between the runner and the Python worker, the shuffle,
state and timer requests, each fused step's call) once per group and bundle instead of
once per value: on the streaming job, where that cost dominated, it is what moved
throughput (docs/benchmarks.md). Keys should be few per bundle (e.g. a hash shard), or
the lists stay short and nothing is saved.

Gap it fills: the portable runner charges its per-element cost (Fn API hand-over,
shuffle, state and timer requests) per element, and Beam has no step that batches
within a bundle without a shuffle (`GroupIntoBatches` needs keyed state and a shuffle;
`BatchElements` does not key). No upstream issue is cited. TODO: remove once the
runner's per-element cost no longer dominates the streaming job (docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, Iterator

import apache_beam as beam
from apache_beam import typehints
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue


class GroupBatchesInBundle(beam.PTransform):
    """Lists of items -> (key_of(item), every item of the bundle with that key, in order).

    With `max_items`, the groups are emitted whenever they hold that many items together
    (a key then has several lists per bundle), so no more than that is held.
    """

    def __init__(self, key_of: Callable[[Any], Hashable], key_type: Any = Any,
                 max_items: int | None = None) -> None:
        super().__init__()
        self._key_of = key_of
        self._key_type = key_type
        self._max_items = max_items

    def expand(self, batches: beam.PCollection[list]) -> beam.PCollection:
        hint = batches.element_type
        item = (hint.inner_type if isinstance(hint, typehints.typehints.ListConstraint)
                else Any)
        return batches | "RegroupPerKey" >> beam.ParDo(
            _RegroupFn(self._key_of, self._max_items)).with_output_types(
            typehints.Tuple[self._key_type, typehints.List[item]])


class BatchInBundle(beam.PTransform):
    """Each bundle's values (per window) as one list, in arrival order."""

    def expand(self, values: beam.PCollection) -> beam.PCollection:
        return values | "CollectBatch" >> beam.ParDo(_BatchFn()).with_output_types(
            typehints.List[values.element_type or Any])


class Unbatch(beam.PTransform):
    """Lists -> their items, for a step that takes one item at a time."""

    def expand(self, batches: beam.PCollection[list]) -> beam.PCollection:
        return batches | "Items" >> beam.FlatMap(lambda batch: batch)


def batch_main_outputs(outputs: Iterable[Any], max_size: int | None = None) -> Iterator[Any]:
    """A DoFn's outputs with the main ones as one list (or lists of `max_size`): tagged
    outputs as they come, then the list of the others, if any."""
    batch = []
    for output in outputs:
        if isinstance(output, beam.pvalue.TaggedOutput):
            yield output
            continue
        batch.append(output)
        if len(batch) == max_size:
            yield batch
            batch = []
    if batch:
        yield batch


class _CollectInBundleFn(beam.DoFn):
    """Lists per (window, key), emitted as (key, list) -- or the list alone -- at bundle end."""

    KEYED = True

    def start_bundle(self) -> None:
        self._groups: dict[tuple[Any, Any], tuple[list[Timestamp], list[Any]]] = {}

    def _group(self, window: Any, key: Any, timestamp: Timestamp) -> list[Any]:
        group = self._groups.get((window, key))
        if group is None:
            values: list[Any] = []
            self._groups[(window, key)] = ([timestamp], values)
            return values
        earliest, values = group
        if timestamp < earliest[0]:
            earliest[0] = timestamp
        return values

    def finish_bundle(self) -> Iterable[WindowedValue]:
        return self._release()

    def _release(self) -> Iterator[WindowedValue]:
        """Every group held, each in its window and with its earliest timestamp."""
        groups, self._groups = self._groups, {}
        for (window, key), (earliest, values) in groups.items():
            yield WindowedValue((key, values) if self.KEYED else values, earliest[0], [window])


class _RegroupFn(_CollectInBundleFn):
    def __init__(self, key_of: Callable[[Any], Hashable], max_items: int | None = None) -> None:
        self._key_of = key_of
        self._max_items = max_items

    def start_bundle(self) -> None:
        super().start_bundle()
        self._held = 0

    def process(self, batch: list, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> Iterator[WindowedValue]:
        key_of = self._key_of
        lists: dict[Hashable, list[Any]] = {}
        for item in batch:
            key = key_of(item)
            values = lists.get(key)
            if values is None:
                values = lists[key] = self._group(window, key, timestamp)
            values.append(item)
        self._held += len(batch)
        if self._max_items is not None and self._held >= self._max_items:
            self._held = 0
            yield from self._release()


class _BatchFn(_CollectInBundleFn):
    KEYED = False

    def process(self, value: Any, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> None:
        self._group(window, None, timestamp).append(value)
