"""What Deliver hands a sink: serialised documents (`Record`) in batches, and when to flush.

`Batch.batch_id` is derived from the batch's content, so a sink that names
what it writes after it writes the same name for a retried batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence


#: what one (application, delivery shard) may hold while its sink fails (`max_buffer`)
DEFAULT_MAX_BUFFER_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Batching:
    """When a batch is flushed: whichever limit is reached first; and how much waits for a
    failing sink per application and delivery shard before the rest is dead-lettered."""

    max_records: int
    max_bytes: int
    max_delay_s: float
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES


class Record(NamedTuple):
    """One delivered document, serialised."""

    vin: str
    message_id: str
    event_ms: int       # newest entry timestamp in the document (epoch ms)
    document: bytes     # the JSON document (DATA-CONTRACTS §4), no trailing newline
    received_ms: int = 0  # when the source message reached FleetStream (delivery latency)


class Batch(NamedTuple):
    """Documents of one application, in per-vehicle order."""

    application_id: str
    batch_id: str                # deterministic from the records' message ids
    records: Sequence[Record]

    @property
    def event_ms(self) -> int:
        """Event time that names the batch's partition (its first record's)."""
        return self.records[0].event_ms

    def jsonl(self) -> bytes:
        """The records as JSON lines."""
        return b"".join(r.document + b"\n" for r in self.records)
