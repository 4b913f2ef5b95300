"""The stages composed once, for every job: map -> order -> permit -> deliver.

`DeliverFleet` takes raw envelopes and a permit step (the side-input table of
a batch job, `PermitByActivation`, or the keyed-state join of the streaming job,
`OrderAndPermitKeyed`, which also does the ordering in the same keyed step) and returns the
permitted documents and every dead letter (mapping and delivery); the batch
replay, the embedded demo and the streaming job differ only in where envelopes
and activations come from and where the outputs go.

When an application has geofences, `GeofenceEvents` reads the permitted documents
for its crossings and the events join the documents on their way to `Deliver`, so
they reach the application's own sink unchanged; with `redis_url` they are also
appended to their Redis streams (`AppendGeofenceEvents`). Without geofences the
job's graph is what it was.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import apache_beam as beam

from fleetstream.io.redis.geofence_streams import AppendGeofenceEvents
from fleetstream.io.sinks.registry import application_sink
from fleetstream.runtime.group_in_bundle import BatchInBundle, Unbatch
from fleetstream.schemas.config import Application
from fleetstream.schemas.dead_letter import DEAD_LETTERS
from fleetstream.settings.stream import OrderSettings
from fleetstream.transforms.deliver import Deliver
from fleetstream.transforms.delivery_retry import RetryPolicy
from fleetstream.transforms.geofence_events import GeofenceEvents, fenced_applications
from fleetstream.transforms.map_to_autoapi import MapToAutoApi
from fleetstream.transforms.order_and_permit_keyed import OrderAndPermitKeyed
from fleetstream.transforms.order_per_vehicle import OrderPerVehicle


class FleetOutputs(NamedTuple):
    """What DeliverFleet produces besides the sinks' writes."""

    #: (application_id, Record): every document, before batching (lists of them with
    #: batches, and in a batch job: one list per vehicle)
    records: beam.PCollection
    dead_letters: beam.PCollection  # dicts: mapping and delivery dead letters
    #: (vin, MappedMessage) (lists of them with batches): every mapped message, before
    #: ordering and permissions, once per source message (the latest-state store's input);
    #: None when DeliverFleet was told nothing reads it (`mapped_out=False`)
    mapped: beam.PCollection | None = None
    #: (application_id, Record) geofence events (lists as `records`); None without geofences
    geofence_events: beam.PCollection | None = None


class DeliverFleet(beam.PTransform):
    """Raw envelopes to every application's sink, through the given permit step.

    With `batches=True` (the streaming job, and the replay) envelopes come in lists and
    documents leave in lists (`records`), so each step pays the runner's
    per-element cost per list. The keyed step `OrderAndPermitKeyed` takes and
    gives lists (so it needs `batches=True`); `PermitByActivation`'s side-input
    path works per message in between, except in a batch job (bounded input), where
    each vehicle's messages go from the ordering to the sinks' batching as one list,
    and, with `batches=True`, the messages stay in lists up to the ordering's shuffle,
    which they cross as one byte string per vehicle (`OrderPerVehicle(batches=True)`).
    With `mapped_out=False` (a replay without a state store) such a batch job maps each
    message straight into its permitted JSON (`PermitByActivation.map_and_prepare()`) and
    `FleetOutputs.mapped` is None.
    """

    def __init__(self, applications: Sequence[Application], permit: beam.PTransform,
                 order: OrderSettings = OrderSettings(), retry: RetryPolicy | None = None,
                 bounded: bool | None = None, delivery_shards: int = 1,
                 batches: bool = False, redis_url: str | None = None,
                 mapped_out: bool = True) -> None:
        super().__init__()
        if isinstance(permit, OrderAndPermitKeyed) and not batches:
            raise ValueError("OrderAndPermitKeyed takes lists of messages: use batches=True")
        self._delivery_shards = delivery_shards
        self._applications = tuple(applications)
        self._permit = permit
        self._order = order
        self._retry = retry
        self._bounded = bounded
        self._batches = batches
        self._redis_url = redis_url
        self._mapped_out = mapped_out

    def expand(self, envelopes: beam.PCollection) -> FleetOutputs:
        bounded = envelopes.is_bounded if self._bounded is None else self._bounded
        keyed = isinstance(self._permit, OrderAndPermitKeyed)
        # a batch job's lists that nothing reads as mapped data are prepared as they are mapped
        prepared = not self._mapped_out and self._batches and bounded and not keyed
        mapping = (self._permit.of_lists().map_and_prepare() if prepared
                   else MapToAutoApi(batches=self._batches))
        mapped = envelopes | "MapToAutoApi" >> mapping
        messages = mapped.mapped
        if keyed:   # orders as it permits
            records = messages | "OrderAndPermit" >> self._permit
            lists = True
        else:
            # a batch job passes each vehicle's documents on as one list, and with batches
            # keeps the lists up to the shuffle
            in_lists = self._batches and bounded
            if self._batches and not bounded:
                messages = messages | "Unbatch" >> Unbatch()
            permit = self._permit.of_lists() if bounded else self._permit
            if not prepared:
                messages = messages | "PrepareData" >> permit.prepare(batches=in_lists)
            records = (messages
                       | "OrderPerVehicle" >> OrderPerVehicle(self._order.reorder_window_s,
                                                              self._order.dedupe_horizon_s,
                                                              self._bounded, lists=bounded,
                                                              batches=in_lists)
                       | "PermitByActivation" >> permit)
            if self._batches and not bounded:
                records = records | "Batch" >> BatchInBundle()
            lists = self._batches or bounded
        to_deliver, events = records, None
        if fenced_applications(self._applications):
            events = records | "GeofenceEvents" >> GeofenceEvents(
                self._applications, shards=self._delivery_shards, batches=lists)
            to_deliver = (records, events) | "DocumentsAndEvents" >> beam.Flatten()
            if self._redis_url:
                _ = events | "AppendGeofenceEvents" >> AppendGeofenceEvents(
                    self._redis_url, batches=lists)
        delivery_dead_letters = to_deliver | "Deliver" >> Deliver(
            self._applications, application_sink, self._retry, shards=self._delivery_shards,
            batches=lists)
        return FleetOutputs(records, (mapped[DEAD_LETTERS], delivery_dead_letters)
                            | "AllDeadLetters" >> beam.Flatten(),
                            None if prepared else mapped.mapped, geofence_events=events)
