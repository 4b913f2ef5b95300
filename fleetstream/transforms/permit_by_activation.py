"""PermitByActivation: a vehicle's data goes to an application only while approved, and only what it may see.

Input: `(vin, MappedMessage)` in per-vehicle order. Side input: the activation
table, a dict `vin -> frozenset of application ids` whose newest activation
event is `approved` (DATA-CONTRACTS §6; `ActivationTable` builds it from
events). Output: `(application_id, Record)`, one serialised document
(DATA-CONTRACTS §4) per application that is approved for the vehicle and
permitted at least one of the message's properties; empty documents are
dropped.

Counters: `fleetstream:<application>.delivered` / `.filtered` per
application and message, and `<source>.delivered` / `<source>.filtered` per
source message (delivered to at least one application, or to none).
"""
from __future__ import annotations

from typing import Any, Container, Iterable, Mapping, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.coders import coders as coders_module
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)

from fleetstream.io.base import Record
from fleetstream.mappers.base import Data
from fleetstream.schemas.config import APPROVED, ActivationEvent, Application
from fleetstream.schemas.document import document_json, message_id
from fleetstream.transforms import coders  # noqa: F401 - registers the NamedTuple coders
from fleetstream.transforms.counters import APP_SCOPE, BundleCounts
from fleetstream.transforms.order_per_vehicle import (Reorder, VehicleOrder, VehicleOrderCoder,
                                                      empty_order, set_flush_timers, wall_ms)
from fleetstream.schemas.mapped import MappedMessage

ActivationTableType = Mapping[str, frozenset[str]]


def permitted_data(data: Data, permitted: Mapping[str, frozenset[str]]) -> Data:
    """Only the capabilities and properties in `permitted` (capability -> property names).

    A capability whose properties are all permitted is kept as it is, not copied.
    """
    kept: Data = {}
    for capability, properties in data.items():
        allowed = permitted.get(capability)
        if allowed is None:
            continue
        if properties and allowed.issuperset(properties):
            kept[capability] = properties
            continue
        subset = {name: entries for name, entries in properties.items() if name in allowed}
        if subset:
            kept[capability] = subset
    return kept


Newest = dict[tuple[str, str], tuple[int, bool]]  # (vin, app) -> (at_ms, approved)


def offer_activation(newest: Newest, key: tuple[str, str], candidate: tuple[int, bool]) -> None:
    """Keep `candidate` for `key` when it is newer; on a tie, not approved wins."""
    current = newest.get(key)
    if current is None or candidate[0] > current[0] or \
            (candidate[0] == current[0] and not candidate[1]):
        newest[key] = candidate


def newest_activations(events: Iterable[ActivationEvent]) -> Newest:
    """(vin, application) -> (at_ms, approved) of the newest event of each pair."""
    newest: Newest = {}
    for event in events:
        offer_activation(newest, (event.vin, event.application_id),
                         (event.at_ms, event.status == APPROVED))
    return newest


def approved_table(newest: Newest) -> dict[str, frozenset[str]]:
    """vin -> the applications it is approved for."""
    table: dict[str, set[str]] = {}
    for (vin, application_id), (_, approved) in newest.items():
        if approved:
            table.setdefault(vin, set()).add(application_id)
    return {vin: frozenset(apps) for vin, apps in table.items()}


class _NewestActivationsFn(beam.CombineFn):
    def create_accumulator(self) -> Newest:
        return {}

    def add_input(self, accumulator: Newest, event: ActivationEvent) -> Newest:
        offer_activation(accumulator, (event.vin, event.application_id),
                         (event.at_ms, event.status == APPROVED))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Newest]) -> Newest:
        merged: Newest = {}
        for accumulator in accumulators:
            for key, candidate in accumulator.items():
                offer_activation(merged, key, candidate)
        return merged

    def extract_output(self, accumulator: Newest) -> dict[str, frozenset[str]]:
        return approved_table(accumulator)


class ActivationTable(beam.PTransform):
    """Activation events -> a single activation table (vin -> approved application ids)."""

    def expand(self, events: beam.PCollection[ActivationEvent]) -> beam.PCollection[dict]:
        return events | "NewestPerVehicleAndApplication" >> beam.CombineGlobally(
            _NewestActivationsFn())


class PermitByActivation(beam.PTransform):
    """Documents for approved applications, holding only permitted properties."""

    def __init__(self, applications: Sequence[Application],
                 activation_table: beam.PCollection[dict]) -> None:
        super().__init__()
        self._applications = tuple((a.id, a.permitted) for a in applications)
        self._table = activation_table

    def expand(self, messages: beam.PCollection[tuple[str, MappedMessage]]
               ) -> beam.PCollection[tuple[str, Record]]:
        return messages | "Permit" >> beam.ParDo(
            _PermitFn(self._applications), beam.pvalue.AsSingleton(self._table)
        ).with_output_types(tuple[str, Record])


class _PermitFn(beam.DoFn):
    def __init__(self, applications: tuple[tuple[str, Mapping[str, frozenset[str]]], ...]) -> None:
        self._applications = applications
        self._counts = BundleCounts()

    def process(self, element: tuple[str, MappedMessage],
                table: ActivationTableType) -> Iterable[tuple[str, Record]]:
        vin, message = element
        yield from _documents(vin, message, table.get(vin, ()), self._applications, self._counts)

    def finish_bundle(self) -> None:
        self._counts.flush()


def _documents(vin: str, message: MappedMessage, approved: Container[str],
               applications: tuple[tuple[str, Mapping[str, frozenset[str]]], ...],
               counts: BundleCounts) -> Iterable[tuple[str, Record]]:
    """One (application, Record) per approved application that may see part of the message."""
    delivered = False
    for application_id, permitted in applications:
        data = permitted_data(message.data, permitted) if application_id in approved else None
        if not data:
            counts.add(f"{APP_SCOPE}{application_id}.filtered")
            continue
        delivered = True
        counts.add(f"{APP_SCOPE}{application_id}.delivered")
        msg_id = message_id(message.source_message_id, application_id)
        yield application_id, Record(
            vin, msg_id, message.newest_ms,
            document_json(application_id, vin, message.source, msg_id, data, message.late))
    counts.add(f"{message.source}.{'delivered' if delivered else 'filtered'}")


_MESSAGE, _EVENT = 0, 1


#: a message or an activation event keyed by VIN, tagged with its kind (_MESSAGE or _EVENT)
_TAGGED = tuple[str, tuple[int, Any]]


def _messages_and_events(messages: beam.PCollection[tuple[str, MappedMessage]],
                         events: beam.PCollection[ActivationEvent]) -> beam.PCollection[_TAGGED]:
    """Messages and activation events in one PCollection keyed by VIN, each tagged."""
    keyed_events = events | "KeyEventsByVin" >> beam.Map(
        lambda e: (e.vin, (_EVENT, e))).with_output_types(_TAGGED)
    tagged = messages | "TagMessages" >> beam.MapTuple(
        lambda vin, m: (vin, (_MESSAGE, m))).with_output_types(_TAGGED)
    return (tagged, keyed_events) | "MessagesAndEvents" >> beam.Flatten().with_output_types(
        _TAGGED)


#: how long after its reorder window (in event time) a vehicle's first release after the
#: job starts waits, so that activation events read before the watermark passed also
#: crossed the pipeline to the keyed step (without it, a cold start on the local cluster
#: filtered a message whose approval the watermark had already passed; docs/runtime.md)
COLD_START_HOLD_S = 5.0


class OrderAndPermitKeyed(beam.PTransform):
    """OrderPerVehicle and PermitByActivation for streaming jobs, in one stateful step keyed by VIN.

    Activation events and messages meet in keyed state per VIN, so an approval
    or revocation applies to every message of that vehicle released after it,
    with no side-input refresh interval; state grows with the number of
    vehicles, partitioned like the data. One state value per vehicle holds the
    ordering buffer and the vehicle's newest activation per application (as
    two steps each message crossed two shuffles and two keyed stages); an
    activation event is appended to a bag without reading anything (a cold
    start reads the whole activations topic) and folded in when a message of
    the vehicle needs the state: a
    message is ordered as OrderPerVehicle orders it (same window, late marking
    and duplicates, `Reorder`) and, when it leaves, permitted against the
    activations read so far, as PermitByActivation permits it.

    At a cold start the raw topics and the activations topic are read
    concurrently, so a vehicle's first messages can come before its approvals:
    each vehicle's first release therefore waits for the event-time timer,
    `cold_start_hold_s` after its window (the streaming job reads activations
    with record-time timestamps, so the watermark passes a moment only once the
    activation events published before it are read). From then on the vehicle
    is settled and its messages leave on the processing-time timer.
    """

    def __init__(self, applications: Sequence[Application],
                 activation_events: beam.PCollection[ActivationEvent],
                 reorder_window_s: float = 2.0, dedupe_horizon_s: float = 600.0,
                 cold_start_hold_s: float = COLD_START_HOLD_S) -> None:
        super().__init__()
        if min(reorder_window_s, dedupe_horizon_s, cold_start_hold_s) < 0:
            raise ValueError("reorder_window_s, dedupe_horizon_s and cold_start_hold_s must "
                             "be >= 0")
        self._applications = tuple((a.id, a.permitted) for a in applications)
        self._events = activation_events
        self._window_ms = int(reorder_window_s * 1000)
        self._horizon_ms = int(dedupe_horizon_s * 1000)
        self._hold_ms = int(cold_start_hold_s * 1000)

    def expand(self, messages: beam.PCollection[tuple[str, MappedMessage]]
               ) -> beam.PCollection[tuple[str, Record]]:
        return (_messages_and_events(messages, self._events)
                | "OrderAndPermit" >> beam.ParDo(_OrderAndPermitFn(
                    self._applications, self._window_ms, self._horizon_ms, self._hold_ms))
                .with_input_types(_TAGGED).with_output_types(tuple[str, Record]))


class VehicleState(NamedTuple):
    """One vehicle's state in OrderAndPermitKeyed."""

    order: VehicleOrder
    newest: Newest
    #: the watermark has passed one of its releases: every activation event published
    #: before that is in `newest`, so later releases may go on processing time
    settled: bool


class VehicleStateCoder(coders_module.Coder):
    """VehicleState as plain tuples."""

    def __init__(self) -> None:
        self._order = VehicleOrderCoder()
        self._plain = FastPrimitivesCoder()

    def encode(self, value: VehicleState) -> bytes:
        return self._plain.encode((self._order.encode(value.order), list(value.newest.items()),
                                   value.settled))

    def decode(self, encoded: bytes) -> VehicleState:
        # (order, newest) without the flag: a savepoint of a job that had been running
        order, newest, *settled = self._plain.decode(encoded)
        return VehicleState(self._order.decode(order), {tuple(k): tuple(v) for k, v in newest},
                            settled[0] if settled else True)

    def is_deterministic(self) -> bool:
        return False


class _OrderAndPermitFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("vehicle", VehicleStateCoder())
    #: activation events not yet folded into STATE, as (application_id, at_ms, approved):
    #: an event is a blind append (no state read), folded in when a message needs the state
    EVENTS = BagStateSpec("activations", FastPrimitivesCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
    FLUSH_NOW = TimerSpec("flush_now", TimeDomain.REAL_TIME)

    def __init__(self, applications: tuple[tuple[str, Mapping[str, frozenset[str]]], ...],
                 window_ms: int, horizon_ms: int, hold_ms: int) -> None:
        self._applications = applications
        self._window_ms = window_ms
        self._horizon_ms = horizon_ms
        self._hold_ms = hold_ms
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._reorder = Reorder(self._window_ms, self._horizon_ms, self._counts)

    def process(self, element: tuple[str, tuple[int, Any]],
                state=beam.DoFn.StateParam(STATE),
                events=beam.DoFn.StateParam(EVENTS),
                flush=beam.DoFn.TimerParam(FLUSH),
                flush_now=beam.DoFn.TimerParam(FLUSH_NOW),
                timestamp=beam.DoFn.TimestampParam) -> Iterable[tuple[str, Record]]:
        vin, (kind, item) = element
        if kind == _EVENT:
            events.add((item.application_id, item.at_ms, item.status == APPROVED))
            return
        vehicle = _vehicle(vin, state, events) or VehicleState(empty_order(), {}, False)
        order, now, timer_at = self._reorder.accept(vehicle.order, item,
                                                    timestamp.micros // 1000)
        state.write(vehicle._replace(order=order))
        if timer_at is not None:
            set_flush_timers(timer_at, flush, flush_now)
        if now is not None:
            yield from _documents(vin, now, _approved(vehicle.newest), self._applications,
                                  self._counts)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE),
                 events=beam.DoFn.StateParam(EVENTS),
                 flush=beam.DoFn.TimerParam(FLUSH),
                 flush_now=beam.DoFn.TimerParam(FLUSH_NOW),
                 fired=beam.DoFn.TimestampParam) -> Iterable[tuple[str, Record]]:
        vehicle = _vehicle(key, state, events)
        if vehicle and vehicle.order.buffered and not vehicle.settled:
            hold_until = min(arrived for arrived, _ in vehicle.order.buffered) \
                + self._window_ms + self._hold_ms
            if fired.micros // 1000 < hold_until:
                set_flush_timers(hold_until, flush)
                return
            vehicle = vehicle._replace(settled=True)
        yield from self._flush(key, state, vehicle, fired.micros // 1000, flush, flush_now)

    @on_timer(FLUSH_NOW)
    def on_flush_now(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE),
                     events=beam.DoFn.StateParam(EVENTS),
                     flush=beam.DoFn.TimerParam(FLUSH),
                     flush_now=beam.DoFn.TimerParam(FLUSH_NOW)
                     ) -> Iterable[tuple[str, Record]]:
        vehicle = _vehicle(key, state, events)
        if vehicle and vehicle.settled:    # else the event-time timer releases it
            yield from self._flush(key, state, vehicle, wall_ms(), flush, flush_now)

    def _flush(self, vin: str, state: Any, vehicle: VehicleState | None, now_ms: int,
               *timers: Any) -> Iterable[tuple[str, Record]]:
        if not vehicle or not vehicle.order.buffered:
            return
        order, released, timer_at = self._reorder.flush(vehicle.order, now_ms)
        if not released:
            return
        state.write(vehicle._replace(order=order))
        if timer_at is not None:
            set_flush_timers(timer_at, *timers)
        approved = _approved(vehicle.newest)
        for message in released:
            yield from _documents(vin, message, approved, self._applications, self._counts)
        self._counts.flush()

    def finish_bundle(self) -> None:
        self._counts.flush()


def _vehicle(vin: str, state: Any, events: Any) -> VehicleState | None:
    """The vehicle's state with the activation events appended since, folded in (and saved)."""
    vehicle = state.read()
    pending = list(events.read())
    if pending:
        vehicle = vehicle or VehicleState(empty_order(), {}, False)
        for application_id, at_ms, approved in pending:
            offer_activation(vehicle.newest, (vin, application_id), (at_ms, approved))
        events.clear()
        state.write(vehicle)
    return vehicle


def _approved(newest: Newest) -> set[str]:
    return {app for (_, app), (_, ok) in newest.items() if ok}
