"""OrderPerVehicle: per-vehicle order, late marking and duplicate dropping, streaming and batch."""
from __future__ import annotations

import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from fleetstream.transforms.order_per_vehicle import OrderPerVehicle
from fleetstream.transforms.ordering import drop_duplicates, merge_seen, release_due, seen_key
from tests.helpers import message


def test_release_due_sends_what_waited_and_everything_older() -> None:
    old, newer, newest = message(100), message(200), message(300)
    buffered = [(1_000, newer), (2_500, old), (2_600, newest)]
    released, kept = release_due(buffered, now_ms=3_000, window_ms=2_000)
    # `newer` waited 2 s; `old` sorts before it so it leaves too, in order; `newest` stays.
    assert released == [old, newer]
    assert kept == [(2_600, newest)]


def test_release_due_keeps_everything_before_the_window() -> None:
    buffered = [(1_000, message(5))]
    assert release_due(buffered, now_ms=2_999, window_ms=2_000) == ([], buffered)


def test_drop_duplicates_within_horizon_only() -> None:
    seen: dict[str, int] = {}
    first = message(1, smid="a", received_ms=1_000)
    again = message(1, smid="a", received_ms=1_500)
    much_later = message(1, smid="a", received_ms=10_000)
    assert drop_duplicates([first, again], seen, horizon_ms=5_000) == [first]
    assert drop_duplicates([much_later], seen, horizon_ms=5_000) == [much_later]


def test_older_seen_ids_count_as_seen_and_merge_within_the_horizon() -> None:
    a, b = seen_key("a"), seen_key("b")
    older = {a: 1_000, b: 9_000}
    seen: dict[int, int] = {}
    fresh = drop_duplicates([message(1, smid="a", received_ms=4_000),     # within 5 s of a
                             message(1, smid="b", received_ms=15_000)],   # 6 s after b
                            seen, 5_000, older)
    assert [m.source_message_id for m in fresh] == ["b"] and seen == {b: 15_000}
    assert older == {a: 1_000, b: 9_000}          # read only
    # merged: b's newer time wins; a is past the horizon of the newest (15 s - 5 s)
    assert merge_seen(older, seen, 5_000) == {b: 15_000}
    assert merge_seen({}, {}, 5_000) == {}


def test_drop_duplicates_keeps_only_ids_within_the_horizon_of_the_newest() -> None:
    seen: dict[int, int] = {}
    for i in range(100):
        drop_duplicates([message(1, smid=f"m{i}", received_ms=i * 1_000)], seen, 10_000)
    assert list(seen) == [seen_key(f"m{i}") for i in range(89, 100)]
    # an id seen again past the horizon moves last, so it does not hold older ids back
    seen = {}
    for smid, at in (("a", 0), ("b", 1_000), ("a", 6_000), ("c", 7_000)):
        drop_duplicates([message(1, smid=smid, received_ms=at)], seen, 5_000)
    assert seen == {seen_key("a"): 6_000, seen_key("c"): 7_000}
    assert list(seen) == [seen_key("a"), seen_key("c")]


def test_seen_key_is_a_stable_63_bit_number_per_id() -> None:
    """The same id gives the same key in every process (Python's own str hash would
    not: keys outlive processes in state and checkpoints), distinct ids distinct keys."""
    ids = [f"{i:032x}" for i in range(10_000)]
    keys = {seen_key(smid) for smid in ids}
    assert len(keys) == len(ids) and all(0 <= key < 2 ** 63 for key in keys)
    elsewhere = subprocess.run(
        [sys.executable, "-c", "from fleetstream.transforms.ordering import seen_key;"
                               "print(seen_key('a'))"],
        env={**os.environ, "PYTHONHASHSEED": "7"}, capture_output=True, text=True, check=True)
    assert int(elsewhere.stdout.split()[-1]) == seen_key("a")


def _streaming_options() -> PipelineOptions:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


_COLLECTED: list = []


def _collect(element) -> None:
    """Keeps what the pipeline emitted, in emission order (the DirectRunner runs in-process)."""
    _COLLECTED.append(element)


def _run_stream(stream: TestStream, window_s: float = 2.0) -> list[tuple[str, int, bool]]:
    _COLLECTED.clear()
    with TestPipeline(options=_streaming_options()) as pipeline:
        _ = (pipeline | stream | OrderPerVehicle(reorder_window_s=window_s)
             | beam.Map(_collect))
    return [(vin, m.newest_ms, m.late) for vin, m in _COLLECTED]


def test_streaming_orders_within_window_marks_late_and_drops_duplicates() -> None:
    t0 = 1_000  # seconds
    def at(seconds: float, vin: str, msg):
        return TimestampedValue((vin, msg), t0 + seconds)

    stream = (TestStream()
              .advance_watermark_to(t0)
              # V1: arrives out of order within the 2 s window -> sorted.
              .add_elements([at(0.0, "V1", message(300, received_ms=1)),
                             at(0.5, "V1", message(100, received_ms=2)),
                             at(1.0, "V1", message(200, received_ms=3)),
                             # exact duplicate of the first (same source message id)
                             at(1.2, "V1", message(300, received_ms=1)),
                             at(0.2, "V2", message(50, received_ms=1))])
              .advance_watermark_to(t0 + 5)
              # V1: older than what already left -> delivered at once, marked late.
              .add_elements([at(5.0, "V1", message(150, received_ms=4)),
                             at(5.1, "V1", message(400, received_ms=5))])
              .advance_watermark_to_infinity())
    sent = _run_stream(stream)
    assert [s for s in sent if s[0] == "V1"] == [
        ("V1", 100, False), ("V1", 200, False), ("V1", 300, False),
        ("V1", 150, True), ("V1", 400, False)]
    assert [s for s in sent if s[0] == "V2"] == [("V2", 50, False)]


def test_streaming_per_vehicle_sequence_is_non_decreasing_except_late() -> None:
    stream = TestStream()
    arrivals = [(0.1, 500), (0.3, 100), (0.6, 300), (1.0, 200), (3.5, 250), (3.6, 600),
                (4.0, 550)]
    for seconds, newest in arrivals:
        stream = (stream.advance_watermark_to(seconds)
                  .add_elements([TimestampedValue(("V", message(newest)), seconds)]))
    stream = stream.advance_watermark_to_infinity()
    sent = [(newest, late) for _, newest, late in _run_stream(stream)]
    # 250 arrived after 300 and 500 had left: late. The rest leave in order.
    assert sorted(sent) == sorted([(n, n == 250) for _, n in arrivals])
    on_time = [n for n, late in sent if not late]
    assert on_time == sorted(on_time), sent


def test_batch_sorts_each_vehicle_and_drops_duplicates() -> None:
    inputs = [("V1", message(300, smid="c")), ("V1", message(100, smid="a")),
              ("V1", message(300, smid="c")), ("V2", message(7, smid="z")),
              ("V1", message(200, smid="b"))]
    with TestPipeline() as pipeline:
        out = (pipeline | beam.Create(inputs) | OrderPerVehicle()
               | beam.GroupByKey()
               | beam.MapTuple(lambda vin, ms: (vin, [(m.newest_ms, m.late) for m in ms])))
        assert_that(out, equal_to([("V1", [(100, False), (200, False), (300, False)]),
                                   ("V2", [(7, False)])]))


@pytest.mark.parametrize("seen_merge_s", [0.0, 10.0])
def test_ordering_and_keyed_join_in_one_step_order_late_duplicates_and_revocation(
        seen_merge_s: float) -> None:
    """OrderAndPermitKeyed (the streaming job's keyed step) keeps both rules, whether the
    duplicate's first copy is among the recently seen ids or merged into the older ones."""
    import orjson

    from fleetstream.schemas.activations import ActivationEvent

    t0 = 1_000

    def at(seconds: float, msg):
        return TimestampedValue(("V", msg), t0 + seconds)

    stream = (TestStream(output_tags={"messages", "events"})
              .advance_watermark_to(t0, tag="messages").advance_watermark_to(t0, tag="events")
              .add_elements([TimestampedValue(ActivationEvent("V", "insurer", "approved", 1), t0)],
                            tag="events")
              .advance_watermark_to(t0 + 0.1, tag="events")
              .add_elements([at(0.1, message(300, received_ms=1)),
                             at(0.5, message(100, received_ms=2)),
                             at(1.0, message(200, received_ms=3))], tag="messages")
              .advance_watermark_to(t0 + 1.1, tag="events")
              .add_elements([at(1.2, message(300, received_ms=1))],  # duplicate, next bundle
                            tag="messages")
              .advance_watermark_to(t0 + 5, tag="messages")
              .advance_watermark_to(t0 + 5, tag="events")
              .add_elements([at(5.0, message(150, received_ms=4)),   # late
                             at(5.1, message(400, received_ms=5))], tag="messages")
              .advance_watermark_to(t0 + 10, tag="messages")
              .advance_watermark_to(t0 + 8, tag="events")  # 400 leaves (arrived 5.1, window 2)
              .add_elements([TimestampedValue(ActivationEvent("V", "insurer", "revoked", 2),
                                              t0 + 10)], tag="events")
              .advance_watermark_to(t0 + 11, tag="events")
              .add_elements([at(11.0, message(500, received_ms=6))], tag="messages")
              .advance_watermark_to_infinity(tag="messages")
              .advance_watermark_to_infinity(tag="events"))
    collected = _insurer_documents(stream, cold_start_hold_s=0, seen_merge_s=seen_merge_s)
    documents = [(app, orjson.loads(record.document)) for app, record in collected]
    # in order within the window, the duplicate dropped, 150 late (300 had left), nothing
    # after the revocation (500)
    assert [(app, record.event_ms, doc.get("late", False))
            for (app, doc), (_, record) in zip(documents, collected)] == [
        ("insurer", 100, False), ("insurer", 200, False), ("insurer", 300, False),
        ("insurer", 150, True), ("insurer", 400, False)]
    assert all(set(doc["data"]) == {"diagnostics"} for _, doc in documents)


def test_a_vehicle_whose_approval_comes_after_its_first_messages_is_still_delivered() -> None:
    """At a cold start an approval can reach the keyed step after the reorder window."""
    from fleetstream.schemas.activations import ActivationEvent
    from fleetstream.transforms.order_and_permit_keyed import COLD_START_HOLD_S

    t0, late_approval_s = 1_000, 2.0 + COLD_START_HOLD_S - 1
    stream = (TestStream(output_tags={"messages", "events"})
              .advance_watermark_to(t0, tag="messages").advance_watermark_to(t0, tag="events")
              .add_elements([TimestampedValue(("V", message(100)), t0 + 0.1),
                             TimestampedValue(("W", message(100)), t0 + 0.1)], tag="messages")
              .advance_watermark_to(t0 + late_approval_s, tag="messages")
              .advance_watermark_to(t0 + late_approval_s, tag="events")
              .add_elements([TimestampedValue(ActivationEvent("V", "insurer", "approved", 1),
                                              t0 + late_approval_s)], tag="events")
              .advance_watermark_to_infinity(tag="messages")
              .advance_watermark_to_infinity(tag="events"))
    # V's approval came 4 s after its window closed: still delivered; W was never approved
    assert [(app, record.vin) for app, record in _insurer_documents(stream)] == [
        ("insurer", "V")]


def test_the_keyed_step_takes_many_vehicles_messages_in_one_list() -> None:
    """One list (a Kafka poll) holding two vehicles' messages out of order: each vehicle's
    come out in order, with the list's timestamp as their arrival."""
    from fleetstream.schemas.activations import ActivationEvent

    t0 = 1_000
    approvals = [TimestampedValue(ActivationEvent(vin, "insurer", "approved", 1), t0)
                 for vin in ("V", "W")]
    poll = [("V", message(300, received_ms=1)), ("W", message(200, received_ms=2)),
            ("V", message(100, received_ms=3)), ("W", message(100, received_ms=4))]
    stream = (TestStream(output_tags={"messages", "events"})
              .advance_watermark_to(t0, tag="messages").advance_watermark_to(t0, tag="events")
              .add_elements(approvals, tag="events")
              .advance_watermark_to(t0 + 0.1, tag="events")
              .add_elements([TimestampedValue(poll, t0 + 0.1)], tag="messages")
              .advance_watermark_to_infinity(tag="messages")
              .advance_watermark_to_infinity(tag="events"))
    documents = _insurer_documents(stream, cold_start_hold_s=0, lists=True)
    assert [(r.vin, r.event_ms) for _, r in documents if r.vin == "V"] == [("V", 100),
                                                                           ("V", 300)]
    assert [(r.vin, r.event_ms) for _, r in documents if r.vin == "W"] == [("W", 100),
                                                                           ("W", 200)]


def _insurer_documents(stream: TestStream, lists: bool = False, **knobs: float) -> list:
    """What OrderAndPermitKeyed (2 s window) releases to an insurer seeing the odometer;
    the stream's messages are (vin, message) pairs, or lists of them with `lists`."""
    from fleetstream.settings.config import parse_config
    from fleetstream.transforms.order_and_permit_keyed import OrderAndPermitKeyed

    config = parse_config({"applications": [
        {"id": "insurer", "permissions": ["diagnostics.odometer"],
         "sink": {"type": "file", "path": "unused"}}]})
    _COLLECTED.clear()
    with TestPipeline(options=_streaming_options()) as pipeline:
        streams = pipeline | stream
        messages = streams["messages"]
        if not lists:
            messages = messages | "AsLists" >> beam.Map(lambda pair: [pair])
        _ = (messages
             | OrderAndPermitKeyed(config.applications, streams["events"], reorder_window_s=2.0,
                                   **knobs)
             | "FromLists" >> beam.FlatMap(lambda pairs: pairs)
             | beam.Map(_collect))
    return list(_COLLECTED)


def test_a_shards_vehicles_round_trip_through_their_state_coder() -> None:
    from fleetstream.transforms.counters import BundleCounts
    from fleetstream.transforms.order_and_permit_keyed import VehiclesCoder, VehicleState
    from fleetstream.transforms.ordering import Reorder, empty_order

    order, _, _ = Reorder(2_000, 600_000, BundleCounts()).accept(empty_order(), message(300), 5)
    vehicles = {"V": VehicleState(order, {("V", "fleet"): (1, True)}, False),
                "W": VehicleState(empty_order(), {("W", "fleet"): (2, False)}, True)}
    coder = VehiclesCoder()
    assert coder.decode(coder.encode(vehicles)) == vehicles


@pytest.mark.parametrize("held", [2, 20_000])
def test_batch_of_lists_orders_and_dedupes_across_collections(monkeypatch, held: int) -> None:
    """With lists in (a replay), each vehicle's messages cross the shuffle in byte-string
    runs; with at most `held` messages collected at a time a vehicle has several runs, and
    a duplicate in another run than its first copy is still dropped."""
    from fleetstream.transforms import order_per_vehicle

    monkeypatch.setattr(order_per_vehicle, "HELD_MESSAGES", held)
    lists = [[("V1", message(300, smid="c", received_ms=1)), ("V2", message(7, smid="z"))],
             [("V1", message(100, smid="a", received_ms=2))],
             [("V1", message(300, smid="c", received_ms=3)),     # the duplicate
              ("V1", message(200, smid="b", received_ms=4)), ("V2", message(5, smid="y"))]]
    with TestPipeline() as pipeline:
        out = (pipeline | beam.Create([lists], reshuffle=False)
               | beam.FlatMap(lambda all_lists: all_lists)
               | OrderPerVehicle(bounded=True, lists=True, batches=True)
               | beam.MapTuple(lambda vin, ms: (vin, [(m.source_message_id, m.newest_ms)
                                                      for m in ms])))
        assert_that(out, equal_to([("V1", [("a", 100), ("b", 200), ("c", 300)]),
                                   ("V2", [("y", 5), ("z", 7)])]))


def test_lists_in_need_a_batch_job() -> None:
    with pytest.raises(ValueError, match="only in a batch job"):
        with TestPipeline() as pipeline:
            _ = (pipeline | beam.Create([[("V", message(1))]])
                 | OrderPerVehicle(bounded=False, batches=True))
