"""PermitByActivation: a vehicle's data goes to an application only while approved, and only what it may see.

Input: `(vin, MappedMessage)` in per-vehicle order, its data either the message's
`Data` or, cheaper to carry through a shuffle, each application's permitted part as
JSON (`PreparedData`, made by the step `prepare()` returns, before the shuffle), or
(`of_lists()`) each vehicle's messages as one list. Side input: the activation
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
from fleetstream.transforms.activations import (Newest, approved_table, decode_table,
                                                encode_table, newest_activations,
                                                offer_activation)
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.map_to_autoapi import MapToAutoApi
from fleetstream.transforms.permissions import (Applications, application_rules, documents,
                                                prepare_data, vehicle_documents)

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


class KnownActivationTable(beam.PTransform):
    """The activation table of events known when the job is built (a batch job's), as a
    PCollection of one table.

    The table is built here, once, and enters the job as one JSON byte string: Beam pickles
    what `Create` holds several times while it builds and runs the job (dill and bz2, ~130 µs
    per event as ActivationEvents), against a few milliseconds for the table's bytes. The
    bytes are the argument of the one step that decodes them, after an `Impulse`: `Create`
    would hold them in three places (itself, its reshuffle and its FlatMap), each pickled and
    bz2-compressed again and again while the job is built and run (~0.1 CPU s of a replay
    for an 8,000-vehicle table, measured with the pickler instrumented).
    """

    def __init__(self, events: Iterable[ActivationEvent]) -> None:
        super().__init__()
        self._encoded = encode_table(approved_table(newest_activations(events)))

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection[dict]:
        return (begin
                | "Impulse" >> beam.Impulse()
                | "DecodeTable" >> beam.Map(_decoded_table, self._encoded))


def _decoded_table(_: bytes, encoded: bytes) -> dict[str, frozenset[str]]:
    """The table `encoded` holds (the impulse's empty element is not read)."""
    return decode_table(encoded)


class PermitByActivation(beam.PTransform):
    """Documents for approved applications, holding only permitted properties.

    With `lists=True` (or the copy `of_lists()` returns) the input is each vehicle's
    messages as one `(vin, [MappedMessage])` and the output one list of `(application_id,
    Record)` per input list (empty lists are not emitted).
    """

    def __init__(self, applications: Sequence[Application],
                 activation_table: beam.PCollection[dict], lists: bool = False) -> None:
        super().__init__()
        self._given = tuple(applications)
        self._applications = application_rules(applications)
        self._table = activation_table
        self._lists = lists

    def of_lists(self) -> PermitByActivation:
        """The same step for lists of one vehicle's messages."""
        return PermitByActivation(self._given, self._table, lists=True)

    def prepare(self, batches: bool = False) -> beam.PTransform:
        """A step that replaces each message's data by its `PreparedData` for these
        applications: bytes cross a shuffle several times cheaper than nested dicts.

        With lists (a batch job, whose table does not change) only the applications
        approved for the vehicle get theirs (None for the others); a streaming job's table
        may approve one before the message is permitted, so all do. With `batches=True`
        (lists only) the step takes and gives lists of `(vin, MappedMessage)`.
        """
        if batches and not self._lists:
            raise ValueError("prepare(batches=True) is for a batch job's lists: use of_lists()")
        if batches:
            return beam.ParDo(_PrepareApprovedListFn(self._applications),
                              beam.pvalue.AsSingleton(self._table)).with_output_types(
                list[tuple[str, MappedMessage]])
        if self._lists:
            return beam.ParDo(_PrepareApprovedFn(self._applications), beam.pvalue.AsSingleton(
                self._table)).with_output_types(tuple[str, MappedMessage])
        return beam.ParDo(_PrepareFn(self._applications)).with_output_types(
            tuple[str, MappedMessage])

    def map_and_prepare(self) -> MapToAutoApi:
        """`MapToAutoApi(batches=True)` with `prepare(batches=True)` done as each message is
        mapped (lists only): for a batch job that reads nothing else of the mapped data."""
        if not self._lists:
            raise ValueError("map_and_prepare() is for a batch job's lists: use of_lists()")
        return MapToAutoApi(batches=True, prepared_for=self._applications, table=self._table)

    def expand(self, messages: beam.PCollection[tuple[str, MappedMessage]]
               ) -> beam.PCollection[tuple[str, Record]]:
        if self._lists:
            return messages | "Permit" >> beam.ParDo(
                _PermitListFn(self._applications), beam.pvalue.AsSingleton(self._table)
            ).with_output_types(list[tuple[str, Record]])
        return messages | "Permit" >> beam.ParDo(
            _PermitFn(self._applications), beam.pvalue.AsSingleton(self._table)
        ).with_output_types(tuple[str, Record])


class _PrepareFn(beam.DoFn):
    def __init__(self, applications: Applications) -> None:
        self._applications = applications

    def process(self, element: tuple[str, MappedMessage]) -> Iterable[tuple[str, MappedMessage]]:
        vin, message = element
        yield vin, message._replace(data=prepare_data(message.data, self._applications))


class _PrepareApprovedFn(_PrepareFn):
    def process(self, element: tuple[str, MappedMessage],  # type: ignore[override]
                table: ActivationTableType) -> Iterable[tuple[str, MappedMessage]]:
        yield self._prepared(element, table)

    def _prepared(self, element: tuple[str, MappedMessage],
                  table: ActivationTableType) -> tuple[str, MappedMessage]:
        vin, message = element
        return vin, message._replace(data=prepare_data(message.data, self._applications,
                                                       table.get(vin, ())))


class _PrepareApprovedListFn(_PrepareApprovedFn):
    def process(self, pairs: list[tuple[str, MappedMessage]],  # type: ignore[override]
                table: ActivationTableType) -> Iterable[list[tuple[str, MappedMessage]]]:
        prepared = self._prepared
        yield [prepared(pair, table) for pair in pairs]


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


class _PermitListFn(_PermitFn):
    """One vehicle's messages -> one list of their documents."""

    def process(self, element: tuple[str, list[MappedMessage]],  # type: ignore[override]
                table: ActivationTableType) -> Iterable[list[tuple[str, Record]]]:
        vin, messages = element
        made = vehicle_documents(vin, messages, table.get(vin, ()), self._applications,
                                 self._counts)
        if made:
            yield made
