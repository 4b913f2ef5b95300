"""Collecting within a bundle: lists per key, bounded by `max_items`, and lists of outputs."""
from __future__ import annotations

from operator import itemgetter

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from fleetstream.runtime.group_in_bundle import GroupBatchesInBundle, batch_main_outputs


def _check_regrouped(batches: list[list[tuple[str, int]]], max_items: int | None,
                     expected: list) -> None:
    """The (key, values) emitted for one bundle holding `batches` are `expected`."""
    with TestPipeline() as pipeline:
        out = (pipeline | beam.Create([batches], reshuffle=False)
               | beam.FlatMap(lambda all_batches: all_batches)
               | GroupBatchesInBundle(itemgetter(0), str, max_items=max_items)
               | beam.MapTuple(lambda key, pairs: (key, [v for _, v in pairs])))
        assert_that(out, equal_to(expected))


def test_without_a_bound_each_key_has_one_list_per_bundle() -> None:
    batches = [[("a", 1), ("b", 2)], [("a", 3)], [("b", 4), ("a", 5)]]
    _check_regrouped(batches, None, [("a", [1, 3, 5]), ("b", [2, 4])])


def test_max_items_emits_every_group_once_they_hold_that_many() -> None:
    """3 items after the second list: both groups leave; 3 more after the fourth: again.
    Nothing is lost or repeated and each key's values keep their order."""
    batches = [[("a", 1), ("b", 2)], [("a", 3)], [("b", 4), ("a", 5)], [("a", 6)]]
    _check_regrouped(batches, 3, [("a", [1, 3]), ("b", [2]), ("b", [4]), ("a", [5, 6])])


def test_batch_main_outputs_in_lists_of_at_most_max_size() -> None:
    tagged = beam.pvalue.TaggedOutput("bad", "x")
    outputs = list(batch_main_outputs([1, 2, tagged, 3, 4, 5], max_size=2))
    assert outputs == [[1, 2], tagged, [3, 4], [5]]
    assert list(batch_main_outputs([1, 2, 3])) == [[1, 2, 3]]
    assert list(batch_main_outputs([tagged])) == [tagged]
