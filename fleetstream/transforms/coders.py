"""Coders for the product's NamedTuples that cross shuffles and state, registered with Beam.

`MappedMessage` and `Record` are encoded as the plain tuples of their fields
(`fleetstream.runtime.coders.NamedTupleCoder`), several times cheaper than the
pickling Beam's default coder falls back to.
"""
from __future__ import annotations

from typing import Sequence

from apache_beam import coders

from fleetstream.runtime.coders import NamedTupleCoder
from fleetstream.schemas.delivery import Record
from fleetstream.schemas.mapped import MappedMessage


class MappedMessageCoder(NamedTupleCoder[MappedMessage]):
    def __init__(self) -> None:
        super().__init__(MappedMessage)


class RecordCoder(NamedTupleCoder[Record]):
    def __init__(self) -> None:
        super().__init__(Record)


_PLAIN = coders.FastPrimitivesCoder()


def encode_records(records: Sequence[Record]) -> bytes:
    """Records as one byte string (the plain tuples of their fields).

    For state that keeps lists of them: one state value per list, not per record,
    and the worker's state cache sizes one byte string instead of every record.
    """
    return _PLAIN.encode([tuple(record) for record in records])


def decode_records(encoded: bytes) -> list[Record]:
    return [Record._make(fields) for fields in _PLAIN.decode(encoded)]


coders.registry.register_coder(MappedMessage, MappedMessageCoder)
coders.registry.register_coder(Record, RecordCoder)
