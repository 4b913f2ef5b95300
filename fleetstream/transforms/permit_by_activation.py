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

The rules are in `activations` and `permissions`; the streaming job's keyed
variant is `order_and_permit_keyed.OrderAndPermitKeyed`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import apache_beam as beam

from fleetstream.schemas.activations import APPROVED, ActivationEvent
from fleetstream.schemas.config import Application
from fleetstream.schemas.delivery import Record
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.transforms import coders  # noqa: F401 - registers the NamedTuple coders
from fleetstream.transforms.activations import Newest, approved_table, offer_activation
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.permissions import Applications, application_rules, documents

ActivationTableType = Mapping[str, frozenset[str]]


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
        self._applications = application_rules(applications)
        self._table = activation_table

    def expand(self, messages: beam.PCollection[tuple[str, MappedMessage]]
               ) -> beam.PCollection[tuple[str, Record]]:
        return messages | "Permit" >> beam.ParDo(
            _PermitFn(self._applications), beam.pvalue.AsSingleton(self._table)
        ).with_output_types(tuple[str, Record])


class _PermitFn(beam.DoFn):
    def __init__(self, applications: Applications) -> None:
        self._applications = applications
        self._counts = BundleCounts()

    def process(self, element: tuple[str, MappedMessage],
                table: ActivationTableType) -> Iterable[tuple[str, Record]]:
        vin, message = element
        yield from documents(vin, message, table.get(vin, ()), self._applications, self._counts)

    def finish_bundle(self) -> None:
        self._counts.flush()
