"""The permission rule, as plain functions over plain data (no Beam).

A vehicle's message becomes one document (DATA-CONTRACTS §4) per application
that is approved for the vehicle and permitted at least one of its properties,
holding only those; empty documents are dropped. Counted per application
(`app/<id>.delivered` / `.filtered`) and per source message (`<source>.delivered`
/ `.filtered`). `PermitByActivation` and `OrderAndPermitKeyed` apply it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Container, Iterable, Mapping, Sequence

import orjson

from fleetstream.schemas.delivery import Record
from fleetstream.schemas.document import document_json, message_id
from fleetstream.schemas.mapped import Data, MappedMessage
from fleetstream.transforms.counter_names import APP_SCOPE

if TYPE_CHECKING:   # counts are passed in; the rules only call `add`
    from fleetstream.transforms.counters import BundleCounts

#: (application id, capability -> permitted property names) of each application
Applications = tuple[tuple[str, Mapping[str, frozenset[str]]], ...]


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


#: each application's permitted part of a message's data, serialised, in the order of the
#: applications (None where it may see nothing): what the keyed step keeps and documents hold
PreparedData = tuple[bytes | None, ...]


def prepare_data(data: Data, applications: Applications) -> PreparedData:
    """Each application's permitted data as JSON (None where nothing is permitted)."""
    prepared = []
    for _, permitted in applications:
        kept = permitted_data(data, permitted)
        prepared.append(orjson.dumps(kept) if kept else None)
    return tuple(prepared)


def documents(vin: str, message: MappedMessage, approved: Container[str],
               applications: Applications, counts: BundleCounts
               ) -> Iterable[tuple[str, Record]]:
    """One (application, Record) per approved application that may see part of the message."""
    return _documents_of(vin, message, [
        (application_id, permitted_data(message.data, permitted)
         if application_id in approved else None)
        for application_id, permitted in applications], counts)


def prepared_documents(vin: str, message: MappedMessage, approved: Container[str],
                        application_ids: Sequence[str], counts: BundleCounts
                        ) -> Iterable[tuple[str, Record]]:
    """`documents` of a message whose data is `PreparedData`."""
    return _documents_of(vin, message, [
        (application_id, orjson.Fragment(data)
         if data is not None and application_id in approved else None)
        for application_id, data in zip(application_ids, message.data)], counts)


def _documents_of(vin: str, message: MappedMessage, data_per_application: list[tuple[str, Any]],
                  counts: BundleCounts) -> Iterable[tuple[str, Record]]:
    delivered = False
    for application_id, data in data_per_application:
        if not data:
            counts.add(f"{APP_SCOPE}{application_id}.filtered")
            continue
        delivered = True
        counts.add(f"{APP_SCOPE}{application_id}.delivered")
        msg_id = message_id(message.source_message_id, application_id)
        yield application_id, Record(
            vin, msg_id, message.newest_ms,
            document_json(application_id, vin, message.source, msg_id, data, message.late),
            message.received_at_ms)
    counts.add(f"{message.source}.{'delivered' if delivered else 'filtered'}")
