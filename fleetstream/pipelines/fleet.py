"""The stages composed once, for every job: map -> order -> permit -> deliver.

`DeliverFleet` takes raw envelopes and a permit step (the side-input table of
a batch job, `PermitByActivation`, or the keyed-state join of the streaming job,
`OrderAndPermitKeyed`, which also does the ordering in the same keyed step) and returns the
permitted documents and every dead letter (mapping and delivery); the batch
replay, the embedded demo and the streaming job differ only in where envelopes
and activations come from and where the outputs go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import apache_beam as beam

from fleetstream.schemas.config import Application
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.transforms.deliver import Deliver, RetryPolicy
from fleetstream.transforms.map_to_autoapi import DEAD_LETTERS, MapToAutoApi
from fleetstream.transforms.order_per_vehicle import OrderPerVehicle
from fleetstream.transforms.permit_by_activation import OrderAndPermitKeyed


@dataclass(frozen=True)
class OrderSettings:
    """Knobs of OrderPerVehicle."""

    reorder_window_s: float = 2.0
    dedupe_horizon_s: float = 600.0


class FleetOutputs(NamedTuple):
    """What DeliverFleet produces besides the sinks' writes."""

    records: beam.PCollection      # (application_id, Record): every document, before batching
    dead_letters: beam.PCollection  # dicts: mapping and delivery dead letters


class DeliverFleet(beam.PTransform):
    """Raw envelopes to every application's sink, through the given permit step."""

    def __init__(self, applications: Sequence[Application], permit: beam.PTransform,
                 order: OrderSettings = OrderSettings(), retry: RetryPolicy = RetryPolicy(),
                 bounded: bool | None = None, delivery_shards: int = 1) -> None:
        super().__init__()
        self._delivery_shards = delivery_shards
        self._applications = tuple(applications)
        self._permit = permit
        self._order = order
        self._retry = retry
        self._bounded = bounded

    def expand(self, envelopes: beam.PCollection[RawEnvelope]) -> FleetOutputs:
        mapped = envelopes | "MapToAutoApi" >> MapToAutoApi()
        if isinstance(self._permit, OrderAndPermitKeyed):   # orders as it permits
            records = mapped.mapped | "OrderAndPermit" >> self._permit
        else:
            records = (mapped.mapped
                       | "OrderPerVehicle" >> OrderPerVehicle(self._order.reorder_window_s,
                                                              self._order.dedupe_horizon_s,
                                                              self._bounded)
                       | "PermitByActivation" >> self._permit)
        delivery_dead_letters = records | "Deliver" >> Deliver(
            self._applications, self._retry, shards=self._delivery_shards)
        return FleetOutputs(records, (mapped[DEAD_LETTERS], delivery_dead_letters)
                            | "AllDeadLetters" >> beam.Flatten())
