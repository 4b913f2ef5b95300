"""OrderAndPermitKeyed: OrderPerVehicle and PermitByActivation for streaming jobs, in one keyed step.

Input: lists of `(vin, MappedMessage)` (the element timestamp is their
arrival) and a PCollection of `ActivationEvent`s; output: lists of
`(application_id, Record)`. The rules are those of `ordering`, `activations`
and `permissions`; this module keeps them in keyed state per vehicle shard
(`VehiclesCoder`) with two flush timers.
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.coders import coders as coders_module
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer

from fleetstream.runtime.group_in_bundle import GroupBatchesInBundle
from fleetstream.schemas.activations import APPROVED, ActivationEvent
from fleetstream.schemas.config import Application
from fleetstream.schemas.delivery import Record
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.transforms import coders  # noqa: F401 - registers the NamedTuple coders
from fleetstream.transforms.activations import Newest, approved_applications, offer_activation
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.order_per_vehicle import set_flush_timers
from fleetstream.transforms.ordering import (NO_IDS, Reorder, VehicleOrder, empty_order, merge_seen,
                                             order_from_plain, plain_order, vehicle_shard, wall_ms)
from fleetstream.transforms.permissions import (Applications, application_rules, prepare_data,
                                                vehicle_documents)

#: how long after its reorder window (in event time) a vehicle's first release after the
#: job starts waits, so that activation events read before the watermark passed also
#: crossed the pipeline to the keyed step (without it, a cold start on the local cluster
#: filtered a message whose approval the watermark had already passed; docs/runtime.md)
COLD_START_HOLD_S = 5.0
#: vehicle shards of OrderAndPermitKeyed unless the job says otherwise
DEFAULT_VEHICLE_SHARDS = 64
#: how often (in arrival time) a shard's recently seen message ids join its older ones
SEEN_MERGE_S = 10.0

_MESSAGE, _EVENT = 0, 1
#: what crosses to the keyed step, as plain tuples (no pickling):
#: (_MESSAGE, vin, arrival ms, MappedMessage fields with PreparedData as `data`) or
#: (_EVENT, vin, 0, (application_id, at_ms, approved))
_Item = tuple[int, str, int, tuple]


class OrderAndPermitKeyed(beam.PTransform):
    """OrderPerVehicle and PermitByActivation for streaming jobs, in one stateful step.

    Activation events and messages meet in keyed state, so an approval or
    revocation applies to every message of that vehicle released after it,
    with no side-input refresh interval; state grows with the number of
    vehicles, partitioned like the data. A message is ordered as
    OrderPerVehicle orders it (same window, late marking and duplicates,
    `Reorder`) and, when it leaves, permitted against the activations read so
    far, as PermitByActivation permits it.

    Input: lists of `(vin, MappedMessage)` (the element timestamp is their
    arrival); output: lists of `(application_id, Record)`, so that the
    runner's per-element cost is paid per list on either side.

    The step is keyed by vehicle shard (`vehicle_shard`, `shards` of them), not
    by VIN: each bundle's messages and events of one shard cross to it as one
    list (`GroupBatchesInBundle`), and its state holds the shard's vehicles, so the
    runner's per-element cost (hand-over to the Python worker, shuffle, state
    and timer requests) is paid per shard and bundle, not per message. Each
    vehicle keeps its own order buffer, activations and timers' due times; the
    shard's two timers fire at the earliest of them. More shards mean smaller
    state values (each bundle rewrites a touched shard's value whole) but
    shorter lists; about 1,000 vehicles per shard or fewer (docs/runtime.md).

    At a cold start the raw topics and the activations topic are read
    concurrently, so a vehicle's first messages can come before its approvals:
    each vehicle's first release therefore waits for the watermark to pass
    `cold_start_hold_s` after its window (the streaming job reads activations
    with record-time timestamps, so the watermark passes a moment only once the
    activation events published before it are read). From then on the vehicle
    is settled and its messages leave on the processing-time timer.
    """

    def __init__(self, applications: Sequence[Application],
                 activation_events: beam.PCollection[ActivationEvent],
                 reorder_window_s: float = 2.0, dedupe_horizon_s: float = 600.0,
                 cold_start_hold_s: float = COLD_START_HOLD_S,
                 shards: int = DEFAULT_VEHICLE_SHARDS,
                 seen_merge_s: float = SEEN_MERGE_S) -> None:
        super().__init__()
        if min(reorder_window_s, dedupe_horizon_s, cold_start_hold_s) < 0:
            raise ValueError("reorder_window_s, dedupe_horizon_s and cold_start_hold_s must "
                             "be >= 0")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self._applications = application_rules(applications)
        self._events = activation_events
        self._window_ms = int(reorder_window_s * 1000)
        self._horizon_ms = int(dedupe_horizon_s * 1000)
        self._hold_ms = int(cold_start_hold_s * 1000)
        self._seen_merge_ms = int(seen_merge_s * 1000)
        self._shards = shards

    def expand(self, messages: beam.PCollection[list[tuple[str, MappedMessage]]]
               ) -> beam.PCollection[list[tuple[str, Record]]]:
        shards = self._shards
        events = self._events | "EventItems" >> beam.Map(
            lambda e: [(_EVENT, e.vin, 0, (e.application_id, e.at_ms, e.status == APPROVED))]
        ).with_output_types(list[_Item])
        arrivals = messages | "MessageItems" >> beam.Map(
            _message_items, self._applications).with_output_types(list[_Item])
        return ((arrivals, events)
                | "MessagesAndEvents" >> beam.Flatten().with_output_types(list[_Item])
                | "GroupByShard" >> GroupBatchesInBundle(
                    lambda item: vehicle_shard(item[1], shards), int)
                | "OrderAndPermit" >> beam.ParDo(_OrderAndPermitFn(
                    self._applications, self._window_ms, self._horizon_ms, self._hold_ms, self._seen_merge_ms))
                .with_input_types(tuple[int, list[_Item]])
                .with_output_types(list[tuple[str, Record]]))


def _message_items(pairs: list[tuple[str, MappedMessage]], applications: Applications,
                   arrived=beam.DoFn.TimestampParam) -> list[_Item]:
    """A list of messages as the keyed step's items, their data prepared for each application:
    small byte strings cross the shuffle and sit in state, not nested dicts."""
    arrived_ms = arrived.micros // 1000
    return [(_MESSAGE, vin, arrived_ms, (*message[:4], prepare_data(message.data, applications),
                                         *message[5:]))
            for vin, message in pairs]


class VehicleState(NamedTuple):
    """One vehicle's state in OrderAndPermitKeyed."""

    order: VehicleOrder
    newest: Newest
    #: the watermark has passed one of its releases: every activation event published
    #: before that is in `newest`, so later releases may go on processing time
    settled: bool


def new_vehicle() -> VehicleState:
    return VehicleState(empty_order(), {}, False)


#: a shard's vehicles: vin -> VehicleState
Vehicles = dict[str, VehicleState]


class VehiclesCoder(coders_module.Coder):
    """A shard's vehicles as plain tuples."""

    def __init__(self) -> None:
        self._plain = FastPrimitivesCoder()

    def encode(self, vehicles: Vehicles) -> bytes:
        return self._plain.encode([
            (vin, plain_order(v.order), list(v.newest.items()), v.settled)
            for vin, v in vehicles.items()])

    def decode(self, encoded: bytes) -> Vehicles:
        return {vin: VehicleState(order_from_plain(order), {tuple(k): tuple(a) for k, a in newest},
                                  settled)
                for vin, order, newest, settled in self._plain.decode(encoded)}

    def is_deterministic(self) -> bool:
        return False


class _OrderAndPermitFn(beam.DoFn):
    VEHICLES = ReadModifyWriteStateSpec("vehicles", VehiclesCoder())
    #: (when last merged, vin -> {seen_key(source message id): receive ms}): the shard's duplicate
    #: window but for the ids seen since the last merge, which stay in each vehicle's
    #: order state; rewritten once per `seen_merge_ms`, not with every bundle
    OLDER_SEEN = ReadModifyWriteStateSpec("older_seen", FastPrimitivesCoder())
    #: the watermark passing the earliest due time: a settled vehicle's window, or an
    #: unsettled one's window + cold-start hold
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
    #: the wall clock passing the earliest window of a settled vehicle
    FLUSH_NOW = TimerSpec("flush_now", TimeDomain.REAL_TIME)

    def __init__(self, applications: Applications, window_ms: int, horizon_ms: int,
                 hold_ms: int, seen_merge_ms: int) -> None:
        self._applications = tuple(applications)
        self._window_ms = window_ms
        self._horizon_ms = horizon_ms
        self._hold_ms = hold_ms
        self._seen_merge_ms = seen_merge_ms
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._reorder = Reorder(self._window_ms, self._horizon_ms, self._counts)

    def process(self, element: tuple[int, list[_Item]],
                state=beam.DoFn.StateParam(VEHICLES),
                older_state=beam.DoFn.StateParam(OLDER_SEEN),
                flush=beam.DoFn.TimerParam(FLUSH),
                flush_now=beam.DoFn.TimerParam(FLUSH_NOW)) -> Iterable[list[tuple[str, Record]]]:
        vehicles: Vehicles = state.read() or {}
        merged_at, older = older_state.read() or (None, {})
        documents: list[tuple[str, Record]] = []
        latest_ms = 0
        for kind, vin, arrived_ms, fields in element[1]:
            vehicle = vehicles.get(vin) or new_vehicle()
            if kind == _EVENT:
                application_id, at_ms, approved = fields
                offer_activation(vehicle.newest, (vin, application_id), (at_ms, approved))
                vehicles[vin] = vehicle
                continue
            order, now, _ = self._reorder.accept(vehicle.order, MappedMessage._make(fields),
                                                 arrived_ms, older.get(vin, NO_IDS))
            vehicles[vin] = vehicle._replace(order=order)
            latest_ms = max(latest_ms, arrived_ms)
            if now is not None:
                documents.extend(vehicle_documents(vin, (now,),
                                                   approved_applications(vehicle.newest),
                                                   self._applications, self._counts))
        if merged_at is None or latest_ms - merged_at >= self._seen_merge_ms:
            older_state.write((latest_ms, self._merge_seen(vehicles, older)))
        state.write(vehicles)
        self._set_timers(vehicles, flush, flush_now)
        if documents:
            yield documents

    @on_timer(FLUSH)
    def on_flush(self, state=beam.DoFn.StateParam(VEHICLES),
                 flush=beam.DoFn.TimerParam(FLUSH),
                 flush_now=beam.DoFn.TimerParam(FLUSH_NOW),
                 fired=beam.DoFn.TimestampParam) -> Iterable[list[tuple[str, Record]]]:
        yield from self._release(state, fired.micros // 1000, True, flush, flush_now)

    @on_timer(FLUSH_NOW)
    def on_flush_now(self, state=beam.DoFn.StateParam(VEHICLES),
                     flush=beam.DoFn.TimerParam(FLUSH),
                     flush_now=beam.DoFn.TimerParam(FLUSH_NOW)
                     ) -> Iterable[list[tuple[str, Record]]]:
        yield from self._release(state, wall_ms(), False, flush, flush_now)

    def _release(self, state: Any, now_ms: int, watermark: bool, flush: Any, flush_now: Any
                 ) -> Iterable[list[tuple[str, Record]]]:
        """Send what is due at `now_ms`: settled vehicles always, unsettled ones on the
        watermark once their hold has passed (which settles them)."""
        vehicles: Vehicles = state.read() or {}
        changed = False
        documents: list[tuple[str, Record]] = []
        for vin, vehicle in list(vehicles.items()):
            if not vehicle.order.buffered:
                continue
            if not vehicle.settled:
                if not watermark or now_ms < self._due(vehicle):
                    continue
                vehicle = vehicle._replace(settled=True)
            order, released, _ = self._reorder.flush(vehicle.order, now_ms)
            vehicles[vin] = vehicle._replace(order=order)
            changed = True
            approved = approved_applications(vehicle.newest)
            documents.extend(vehicle_documents(vin, released, approved, self._applications,
                                               self._counts))
        if changed:
            state.write(vehicles)
        self._set_timers(vehicles, flush, flush_now)
        self._counts.flush()
        if documents:
            yield documents

    def _merge_seen(self, vehicles: Vehicles, older: dict[str, dict[int, int]]
                    ) -> dict[str, dict[int, int]]:
        """Move every vehicle's recently seen ids into `older` (pruned to the horizon)."""
        for vin, vehicle in vehicles.items():
            recent = vehicle.order.seen
            if recent:
                older[vin] = merge_seen(older.get(vin, {}), recent, self._horizon_ms)
                recent.clear()
        return older

    def _due(self, vehicle: VehicleState) -> int:
        """When a vehicle with buffered messages is next due: its oldest arrival's window
        end (`Reorder` keeps it as `timer_at`), plus the cold-start hold until settled."""
        return vehicle.order.timer_at + (0 if vehicle.settled else self._hold_ms)

    def _set_timers(self, vehicles: Vehicles, flush: Any, flush_now: Any) -> None:
        """Each timer at the earliest due time of the vehicles it serves (if any)."""
        event_due = wall_due = None
        for vehicle in vehicles.values():
            if not vehicle.order.buffered:
                continue
            due = self._due(vehicle)
            if vehicle.settled:
                wall_due = due if wall_due is None else min(wall_due, due)
            event_due = due if event_due is None else min(event_due, due)
        if event_due is not None:
            set_flush_timers(event_due, flush)
        if wall_due is not None:
            set_flush_timers(wall_due, flush_now)

    def finish_bundle(self) -> None:
        self._counts.flush()
