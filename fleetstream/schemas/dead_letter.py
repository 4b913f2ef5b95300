"""Dead letters (DATA-CONTRACTS §5): what could not be mapped or delivered, kept whole."""
from __future__ import annotations

from typing import Any

import orjson

from fleetstream.schemas.envelope import payload_fields, record_type_field
from fleetstream.schemas.timestamps import iso_ms

#: stages a dead letter can come from
MAP_STAGE = "map"
INGEST_STAGE = "ingest"
DELIVER_STAGE = "deliver"
#: the tag of the dead-letter output of the steps that make them (MapToAutoApi, Deliver)
DEAD_LETTERS = "dead_letters"


def dead_letter(source: str | None, received_at_ms: int | None, outcome: str, stage: str,
                errors: list[dict[str, str]], payload: bytes,
                message_id: str | None, record_type: str | None = None,
                binary: bool = False) -> dict[str, Any]:
    """A dead-letter record; the payload is kept as text, or base64 when not UTF-8 or
    `binary` (a source whose payloads are binary: always `payload_b64`).

    A record type (DATA-CONTRACTS §1) is kept beside the payload, so that a resend
    rebuilds the envelope whole; dead letters of other sources have no such key.
    """
    return {
        "source": source,
        "received_at": iso_ms(received_at_ms) if received_at_ms is not None else None,
        "outcome": outcome,
        "stage": stage,
        "errors": errors,
        **payload_fields(payload, binary),
        **record_type_field(record_type),
        "message_id": message_id,
    }


def to_json_line(record: dict[str, Any]) -> bytes:
    """A dead letter as one JSON line (no newline)."""
    return orjson.dumps(record)


def delivery_dead_letter(application_id: str, batch_id: str, reason: str,
                         documents: list[bytes]) -> dict[str, Any]:
    """A batch that could not be delivered, with its documents whole."""
    return {
        "application_id": application_id,
        "outcome": "failed",
        "stage": DELIVER_STAGE,
        "errors": [{"field": "sink", "reason": reason}],
        "batch_id": batch_id,
        "documents": [orjson.loads(document) for document in documents],
    }
