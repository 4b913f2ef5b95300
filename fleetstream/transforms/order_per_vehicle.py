"""OrderPerVehicle: each vehicle's messages in timestamp order, late ones marked, duplicates dropped.

Input and output: `(vin, MappedMessage)`, keyed by VIN.

Streaming (unbounded input): keyed state and two flush timers per VIN. The
element timestamp is the message's arrival (the streaming job reads Kafka with
processing-time timestamps). A message waits `reorder_window_s` (default 2 s)
after its arrival for older ones that arrive after it: until the wall clock
(processing-time timer) or the watermark (event-time timer) passes arrival plus
window, whichever comes first; messages leave in non-decreasing order of their
newest entry timestamp. A message older than one that has already left is still delivered
at once, with `late=True` (its document says `"late": true`); nothing is
dropped but exact duplicates: a message with the same source and payload as
one seen within `dedupe_horizon_s` (by receive time) is dropped and counted
(`fleetstream:<source>.duplicate`).

Batch (bounded input, e.g. replay): the whole input is known, so each
vehicle's messages are grouped and sorted once, with the same duplicate rule,
and nothing is held back for a window. With `lists=True` each vehicle's sorted
messages leave as one `(vin, [MappedMessage])`, so the steps after pay the runner's
per-element cost per vehicle, not per message. With `batches=True` the input is lists
of `(vin, MappedMessage)`: each bundle's messages are first collected per vehicle (at
most `HELD_MESSAGES` at a time) and cross the shuffle as one byte string per vehicle and
collection (`encode_messages`), so the shuffle, too, is paid per vehicle.

The rule itself (`Reorder`, `drop_duplicates`, ...) is in `fleetstream.transforms.ordering`.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from fleetstream.runtime.group_in_bundle import GroupBatchesInBundle
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.transforms.coders import decode_messages, encode_messages
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.ordering import (Keyed, KeyedList, Reorder, VehicleOrder,
                                             drop_duplicates, empty_order, order_from_plain,
                                             order_key, plain_order, wall_ms)

#: messages a batch job's step collects per vehicle before it hands them to the shuffle
HELD_MESSAGES = 20_000


class OrderPerVehicle(beam.PTransform):
    """Per-vehicle timestamp order with late marking and duplicate dropping."""

    def __init__(self, reorder_window_s: float = 2.0, dedupe_horizon_s: float = 600.0,
                 bounded: bool | None = None, lists: bool = False,
                 batches: bool = False) -> None:
        super().__init__()
        if reorder_window_s < 0 or dedupe_horizon_s < 0:
            raise ValueError("reorder_window_s and dedupe_horizon_s must be >= 0")
        self._window_ms = int(reorder_window_s * 1000)
        self._horizon_ms = int(dedupe_horizon_s * 1000)
        self._bounded = bounded
        self._lists = lists
        self._batches = batches

    def expand(self, keyed: beam.PCollection[Keyed]) -> beam.PCollection:
        bounded = keyed.is_bounded if self._bounded is None else self._bounded
        if self._batches and not bounded:
            raise ValueError("OrderPerVehicle takes lists (batches=True) only in a batch job")
        if bounded:
            if self._batches:
                keyed = (keyed
                         | "CollectPerVin" >> GroupBatchesInBundle(
                             itemgetter(0), str, max_items=HELD_MESSAGES)
                         | "EncodeRuns" >> beam.Map(encoded_run).with_output_types(
                             tuple[str, bytes]))
            return (keyed
                    | "GroupByVin" >> beam.GroupByKey()
                    | "SortEachVehicle" >> beam.ParDo(_SortVehicleFn(
                        self._horizon_ms, self._lists, self._batches))
                    .with_output_types(KeyedList if self._lists else Keyed))
        return keyed | "ReorderEachVehicle" >> beam.ParDo(
            _ReorderVehicleFn(self._window_ms, self._horizon_ms)).with_input_types(
                Keyed).with_output_types(Keyed)


def _count(counts: BundleCounts, before: Sequence[MappedMessage],
           after: Sequence[MappedMessage]) -> None:
    if len(after) < len(before):
        kept = {id(m) for m in after}
        for message in before:
            if id(message) not in kept:
                counts.add(f"{message.source}.duplicate")


def encoded_run(vin_and_pairs: tuple[str, list[Keyed]]) -> tuple[str, bytes]:
    """(vin, [(vin, message), ...]) -> (vin, the messages as one byte string)."""
    vin, pairs = vin_and_pairs
    return vin, encode_messages([message for _, message in pairs])


class _SortVehicleFn(beam.DoFn):
    def __init__(self, horizon_ms: int, lists: bool, runs: bool = False) -> None:
        self._horizon_ms = horizon_ms
        self._lists = lists
        self._runs = runs   # the values are `encoded_run`s
        self._counts = BundleCounts()

    def process(self, element: tuple[str, Iterable[MappedMessage] | Iterable[bytes]]
                ) -> Iterable[Keyed | KeyedList]:
        vin, messages = element
        if self._runs:
            messages = [message for run in messages for message in decode_messages(run)]
        # Duplicates are judged in receive order, then the survivors sorted.
        received = sorted(messages, key=lambda m: (m.received_at_ms, m.source_message_id))
        fresh = drop_duplicates(received, {}, self._horizon_ms)
        _count(self._counts, received, fresh)
        fresh.sort(key=order_key)
        if self._lists:
            yield vin, fresh
            return
        for message in fresh:
            yield vin, message

    def finish_bundle(self) -> None:
        self._counts.flush()


class VehicleOrderCoder(coders.Coder):
    """VehicleOrder as plain tuples (FastPrimitivesCoder), not pickled."""

    def __init__(self) -> None:
        self._plain = coders.FastPrimitivesCoder()

    def encode(self, order: VehicleOrder) -> bytes:
        return self._plain.encode(plain_order(order))

    def decode(self, encoded: bytes) -> VehicleOrder:
        return order_from_plain(self._plain.decode(encoded))

    def is_deterministic(self) -> bool:
        return False


def set_flush_timers(timer_at: int, *timers) -> None:
    """Set every given flush timer (event time and processing time) to `timer_at` ms."""
    when = Timestamp(micros=timer_at * 1000)
    for timer in timers:
        timer.set(when)


class _ReorderVehicleFn(beam.DoFn):
    """Keyed state per VIN; a message leaves when either flush timer finds it due.

    The event-time timer (`FLUSH`) fires when the watermark passes arrival +
    window; the processing-time timer (`FLUSH_NOW`) fires when the wall clock
    does. On Flink the element timestamp is the Kafka read time, so both mean
    the same instant, but the watermark lags wall time by seconds across
    bundles: the processing-time timer keeps that lag out of the latency. The
    event-time timer keeps the rule exact where processing time is not real
    (TestStream) and flushes everything when the watermark reaches the end.
    """

    STATE = ReadModifyWriteStateSpec("vehicle", VehicleOrderCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
    FLUSH_NOW = TimerSpec("flush_now", TimeDomain.REAL_TIME)

    def __init__(self, window_ms: int, horizon_ms: int) -> None:
        self._window_ms = window_ms
        self._horizon_ms = horizon_ms
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._reorder = Reorder(self._window_ms, self._horizon_ms, self._counts)

    def process(self, element: Keyed, state=beam.DoFn.StateParam(STATE),
                flush=beam.DoFn.TimerParam(FLUSH),
                flush_now=beam.DoFn.TimerParam(FLUSH_NOW),
                timestamp=beam.DoFn.TimestampParam) -> Iterable[Keyed]:
        vin, message = element
        order, now, timer_at = self._reorder.accept(state.read() or empty_order(), message,
                                                    timestamp.micros // 1000)
        state.write(order)
        if timer_at is not None:
            set_flush_timers(timer_at, flush, flush_now)
        if now is not None:
            yield vin, now

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE),
                 flush=beam.DoFn.TimerParam(FLUSH),
                 flush_now=beam.DoFn.TimerParam(FLUSH_NOW),
                 fired=beam.DoFn.TimestampParam) -> Iterable[Keyed]:
        yield from self._flush(key, state, fired.micros // 1000, flush, flush_now)

    @on_timer(FLUSH_NOW)
    def on_flush_now(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE),
                     flush=beam.DoFn.TimerParam(FLUSH),
                     flush_now=beam.DoFn.TimerParam(FLUSH_NOW)) -> Iterable[Keyed]:
        yield from self._flush(key, state, wall_ms(), flush, flush_now)

    def _flush(self, key: str, state: Any, now_ms: int, *timers: Any) -> Iterable[Keyed]:
        order = state.read()
        if not order or not order.buffered:
            return
        order, released, timer_at = self._reorder.flush(order, now_ms)
        if not released:
            return
        state.write(order)
        if timer_at is not None:
            set_flush_timers(timer_at, *timers)
        for message in released:
            yield key, message
        self._counts.flush()

    def finish_bundle(self) -> None:
        self._counts.flush()
