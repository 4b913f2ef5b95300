"""The batching rules of Deliver: a batch's name, a document's size as the knobs count it,
and cutting documents into batches by the knobs. Pure functions, no Beam."""
from __future__ import annotations

import hashlib
from typing import Iterator, Sequence

from fleetstream.schemas.delivery import Batching, Record


def batch_id(records: Sequence[Record]) -> str:
    """A name for a batch derived from its documents' message ids."""
    digest = hashlib.blake2b(digest_size=12)
    for record in records:
        digest.update(record.message_id.encode())
    return digest.hexdigest()


def record_size(record: Record) -> int:
    """A document's bytes as the batching knobs count them (with its newline)."""
    return len(record.document) + 1


def cut_batches(records: Sequence[Record], knobs: Batching) -> Iterator[list[Record]]:
    """`records` in order as batches of at most `max_records` and about `max_bytes` each
    (a batch closes at the document that reaches either)."""
    batch: list[Record] = []
    nbytes = 0
    for record in records:
        batch.append(record)
        nbytes += record_size(record)
        if len(batch) >= knobs.max_records or nbytes >= knobs.max_bytes:
            yield batch
            batch, nbytes = [], 0
    if batch:
        yield batch
