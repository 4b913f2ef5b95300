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

from typing import Any, Container, Iterable, Mapping, Sequence

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from fleetstream.io.base import Record
from fleetstream.mappers.base import Data
from fleetstream.schemas.config import APPROVED, ActivationEvent, Application
from fleetstream.schemas.document import document_json, message_id
from fleetstream.transforms import coders  # noqa: F401 - registers the NamedTuple coders
from fleetstream.transforms.counters import APP_SCOPE, BundleCounts
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


class PermitByActivationKeyed(beam.PTransform):
    """The same rule for streaming jobs, with activations joined in keyed state per VIN.

    Activation events and messages meet in one stateful step keyed by VIN, so
    an approval or revocation applies to every message of that vehicle
    processed after it, with no side-input refresh interval; state grows with
    the number of (vehicle, application) pairs, partitioned like the data.
    """

    def __init__(self, applications: Sequence[Application],
                 activation_events: beam.PCollection[ActivationEvent]) -> None:
        super().__init__()
        self._applications = tuple((a.id, a.permitted) for a in applications)
        self._events = activation_events

    def expand(self, messages: beam.PCollection[tuple[str, MappedMessage]]
               ) -> beam.PCollection[tuple[str, Record]]:
        tagged_type = tuple[str, tuple[int, Any]]
        events = self._events | "KeyEventsByVin" >> beam.Map(
            lambda e: (e.vin, (_EVENT, e))).with_output_types(tagged_type)
        tagged = messages | "TagMessages" >> beam.MapTuple(
            lambda vin, m: (vin, (_MESSAGE, m))).with_output_types(tagged_type)
        return ((tagged, events)
                | "MessagesAndEvents" >> beam.Flatten().with_output_types(tagged_type)
                | "PermitKeyed" >> beam.ParDo(_PermitKeyedFn(self._applications))
                .with_input_types(tagged_type).with_output_types(tuple[str, Record]))


class _PermitKeyedFn(beam.DoFn):
    NEWEST = ReadModifyWriteStateSpec("newest", FastPrimitivesCoder())

    def __init__(self, applications: tuple[tuple[str, Mapping[str, frozenset[str]]], ...]) -> None:
        self._applications = applications
        self._counts = BundleCounts()

    def process(self, element: tuple[str, tuple[int, Any]],
                newest_state=beam.DoFn.StateParam(NEWEST)) -> Iterable[tuple[str, Record]]:
        vin, (kind, item) = element
        newest: Newest = newest_state.read() or {}
        if kind == _EVENT:
            offer_activation(newest, (vin, item.application_id),
                             (item.at_ms, item.status == APPROVED))
            newest_state.write(newest)
            return
        approved = {app for (_, app), (_, ok) in newest.items() if ok}
        yield from _documents(vin, item, approved, self._applications, self._counts)

    def finish_bundle(self) -> None:
        self._counts.flush()
