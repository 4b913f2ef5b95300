"""The permission rule, as plain functions over plain data (no Beam).

A vehicle's message becomes one document (DATA-CONTRACTS §4) per application
that is approved for the vehicle and permitted at least one of its properties,
holding only those; empty documents are dropped. An application with pseudonymous
vehicle ids (`vehicle_ids: pseudonymous`) gets `Application.vehicle_id(vin)` in the
document's `vin` and the Record's `vin` (which sinks use as a key or in a topic), never
the VIN; `message_id` does not depend on it. Counted per application
(`app/<id>.delivered` / `.filtered`) and per source message (`<source>.delivered`
/ `.filtered`). `PermitByActivation` and `OrderAndPermitKeyed` apply it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Container, Mapping, NamedTuple, Sequence

import orjson

from fleetstream.schemas.config import Application
from fleetstream.schemas.delivery import Record
from fleetstream.schemas.document import document_json, message_id
from fleetstream.schemas.mapped import Data, MappedMessage
from fleetstream.schemas.vehicle_ids import vehicle_id
from fleetstream.transforms.counter_names import APP_SCOPE

if TYPE_CHECKING:   # counts are passed in; the rules only call `add`
    from fleetstream.transforms.counters import BundleCounts



class ApplicationRule(NamedTuple):
    """What the permission rule needs of an application (plain, small, picklable)."""

    id: str
    #: capability -> permitted property names
    permitted: Mapping[str, frozenset[str]]
    #: the secret of its pseudonymous vehicle ids; None: it sees VINs
    vehicle_id_secret: bytes | None = None


#: the rule's view of each application, in the configuration's order
Applications = tuple[ApplicationRule, ...]


def application_rules(applications: Sequence[Application]) -> Applications:
    """The rule's view of configured applications."""
    return tuple(ApplicationRule(a.id, a.permitted, a.vehicle_id_secret) for a in applications)


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


def prepare_data(data: Data, applications: Applications,
                 approved: Container[str] | None = None) -> PreparedData:
    """Each application's permitted data as JSON (None where nothing is permitted, or, when
    `approved` is given, where the application is not in it)."""
    prepared = []
    for application_id, permitted, _ in applications:
        if approved is not None and application_id not in approved:
            prepared.append(None)
            continue
        kept = permitted_data(data, permitted)
        prepared.append(orjson.dumps(kept) if kept else None)
    return tuple(prepared)


def documents(vin: str, message: MappedMessage, approved: Container[str],
              applications: Applications, counts: BundleCounts) -> list[tuple[str, Record]]:
    """One (application, Record) per approved application that may see part of the message
    (its data `Data` or `PreparedData`)."""
    return vehicle_documents(vin, (message,), approved, applications, counts)


def vehicle_documents(vin: str, messages: Sequence[MappedMessage], approved: Container[str],
                      applications: Applications, counts: BundleCounts
                      ) -> list[tuple[str, Record]]:
    """`documents` of each of a vehicle's messages, in order; each counter is added once
    per call, with the totals one add per message and application would give."""
    approved_rules = [(index, application) for index, application in enumerate(applications)
                      if application.id in approved]
    delivered = [0] * len(applications)
    outcomes: dict[tuple[str, bool], int] = {}
    made: list[tuple[str, Record]] = []
    for message in messages:
        data = message.data
        prepared = isinstance(data, tuple)
        any_delivered = False
        for index, application in approved_rules:
            if prepared:
                part = data[index]
                if part is None:
                    continue
                part = orjson.Fragment(part)
            else:
                part = permitted_data(data, application.permitted)
                if not part:
                    continue
            any_delivered = True
            delivered[index] += 1
            made.append(_document(vin, message, application, part))
        key = (message.source, any_delivered)
        outcomes[key] = outcomes.get(key, 0) + 1
    _count(counts, len(messages), delivered, outcomes, applications)
    return made


def _document(vin: str, message: MappedMessage, application: ApplicationRule,
              data: Data | orjson.Fragment) -> tuple[str, Record]:
    """The one place a document is built for an application: its data, and the vehicle id
    it sees (the VIN or its pseudonym) in both the document and the Record."""
    application_id = application.id
    msg_id = message_id(message.source_message_id, application_id)
    seen_as = vehicle_id(application.vehicle_id_secret, vin)
    return application_id, Record(
        seen_as, msg_id, message.newest_ms,
        document_json(application_id, seen_as, message.source, msg_id, data, message.late),
        message.received_at_ms)


def _count(counts: BundleCounts, messages: int, delivered: list[int],
           outcomes: Mapping[tuple[str, bool], int], applications: Applications) -> None:
    """Per application, the messages it got a document of and the rest; per source, the
    messages delivered to at least one application and those delivered to none."""
    for application, documents_made in zip(applications, delivered):
        if documents_made:
            counts.add(f"{APP_SCOPE}{application.id}.delivered", documents_made)
        if documents_made < messages:
            counts.add(f"{APP_SCOPE}{application.id}.filtered", messages - documents_made)
    for (source, any_delivered), amount in outcomes.items():
        counts.add(f"{source}.{'delivered' if any_delivered else 'filtered'}", amount)
