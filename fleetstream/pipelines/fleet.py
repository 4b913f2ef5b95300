"""The stages composed once, for every job: map -> order -> permit -> deliver.

`DeliverFleet` takes raw envelopes and an activation table and returns every
dead letter (mapping and delivery); the batch replay, the embedded demo and
the streaming job differ only in where envelopes come from and go to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import apache_beam as beam

from fleetstream.schemas.config import Application
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.transforms.deliver import Deliver, RetryPolicy
from fleetstream.transforms.map_to_autoapi import DEAD_LETTERS, MapToAutoApi
from fleetstream.transforms.order_per_vehicle import OrderPerVehicle
from fleetstream.transforms.permit_by_activation import PermitByActivation


@dataclass(frozen=True)
class OrderSettings:
    """Knobs of OrderPerVehicle."""

    reorder_window_s: float = 2.0
    dedupe_horizon_s: float = 600.0


class DeliverFleet(beam.PTransform):
    """Raw envelopes to every application's sink; returns all dead letters (dicts)."""

    def __init__(self, applications: Sequence[Application], activation_table: beam.PCollection,
                 order: OrderSettings = OrderSettings(),
                 retry: RetryPolicy = RetryPolicy()) -> None:
        super().__init__()
        self._applications = tuple(applications)
        self._table = activation_table
        self._order = order
        self._retry = retry

    def expand(self, envelopes: beam.PCollection[RawEnvelope]) -> beam.PCollection[dict]:
        mapped = envelopes | "MapToAutoApi" >> MapToAutoApi()
        delivery_dead_letters = (
            mapped.mapped
            | "OrderPerVehicle" >> OrderPerVehicle(self._order.reorder_window_s,
                                                   self._order.dedupe_horizon_s)
            | "PermitByActivation" >> PermitByActivation(self._applications, self._table)
            | "Deliver" >> Deliver(self._applications, self._retry))
        return ((mapped[DEAD_LETTERS], delivery_dead_letters)
                | "AllDeadLetters" >> beam.Flatten())
