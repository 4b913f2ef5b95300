"""GroupInBundle: (key, value) -> (key, [values]), one element per key and window in each bundle.

    keyed_lists = pairs | GroupInBundle()

No shuffle, no state: the step fused after its producer collects what one
bundle holds and emits each key's values, in arrival order, when the bundle
finishes (stamped with the earliest of their timestamps, which the bundle's
watermark hold keeps on time). A keyed step after it then pays the runner's
per-element cost (the hand-over between the runner and the Python worker,
the shuffle, state and timer requests) once per key and bundle instead of
once per value: on the streaming job, where that cost dominated, it is what
moved throughput (docs/benchmarks.md). Keys should be few per bundle (e.g. a
hash shard), or the lists stay short and nothing is saved.
"""
from __future__ import annotations

from typing import Any, Iterable

import apache_beam as beam
from apache_beam import typehints
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue


class GroupInBundle(beam.PTransform):
    """Each bundle's values per key (and window) as one list, in arrival order."""

    def expand(self, pairs: beam.PCollection[tuple[Any, Any]]) -> beam.PCollection:
        hint = pairs.element_type
        key, value = (hint.tuple_types if isinstance(hint, typehints.typehints.TupleConstraint)
                      and len(hint.tuple_types) == 2 else (Any, Any))
        return pairs | "CollectPerKey" >> beam.ParDo(_GroupInBundleFn()).with_output_types(
            typehints.Tuple[key, typehints.List[value]])


class _GroupInBundleFn(beam.DoFn):
    def start_bundle(self) -> None:
        self._groups: dict[tuple[Any, Any], tuple[list[Timestamp], list[Any]]] = {}

    def process(self, element: tuple[Any, Any], timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam) -> None:
        key, value = element
        group = self._groups.get((window, key))
        if group is None:
            self._groups[(window, key)] = ([timestamp], [value])
            return
        earliest, values = group
        values.append(value)
        if timestamp < earliest[0]:
            earliest[0] = timestamp

    def finish_bundle(self) -> Iterable[WindowedValue]:
        groups, self._groups = self._groups, {}
        for (window, key), (earliest, values) in groups.items():
            yield WindowedValue((key, values), earliest[0], [window])
