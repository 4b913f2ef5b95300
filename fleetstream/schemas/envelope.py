"""The raw envelope (DATA-CONTRACTS §1): what ingest hands to the mapping stage.

In files each line is `{"source", "received_at", "payload" | "payload_b64"}`,
plus `"record_type"` for a source whose transport carries several kinds of
record (Tesla fleet-telemetry: `V`, `connectivity`, `errors`, ...); on Kafka the
topic names the source (and the record type), the value is the payload and the
record timestamp is the receive time. Both become a `RawEnvelope`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from functools import lru_cache
from typing import NamedTuple

import orjson

from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms


class RawEnvelope(NamedTuple):
    """One source message as received, uninspected."""

    source: str
    received_at_ms: int
    payload: bytes
    #: the kind of record, where the transport names it beside the payload (the Kafka topic
    #: of a fleet-telemetry record: `V`, `connectivity`, `errors`); None for most sources
    record_type: str | None = None

    def source_message_id(self) -> str:
        """Identity of the source message: a pure function of source, payload and record type."""
        return source_message_id(self.source, self.payload, self.record_type)

    def to_json_line(self) -> bytes:
        """The envelope as one JSON line (text payload when it is UTF-8, else base64)."""
        return orjson.dumps({"source": self.source, "received_at": iso_ms(self.received_at_ms),
                             **payload_fields(self.payload), **record_type_field(self.record_type)})


class EnvelopeError(ValueError):
    """A line that is not a readable envelope; the message says why."""


def payload_fields(payload: bytes, binary: bool = False) -> dict[str, str]:
    """`{"payload": text}`, or `{"payload_b64": ...}` when the payload is not UTF-8 or is
    `binary` (a protobuf source's, which may happen to be UTF-8)."""
    if not binary:
        try:
            return {"payload": payload.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"payload_b64": base64.b64encode(payload).decode("ascii")}


def record_type_field(record_type: str | None) -> dict[str, str]:
    """`{"record_type": ...}` when there is one, else nothing (other sources' lines unchanged)."""
    return {} if record_type is None else {"record_type": record_type}


def source_message_id(source: str, payload: bytes, record_type: str | None = None) -> str:
    """32 hex digits identifying (source, payload, record type); duplicates share it.

    Without a record type the id is that of (source, payload) alone, as it always was.
    """
    hasher = _keyed_hasher(source).copy()
    hasher.update(payload)
    if record_type is not None:
        hasher.update(b"\x00record_type:" + record_type.encode())
    return hasher.hexdigest()


@lru_cache(maxsize=64)
def _keyed_hasher(source: str) -> hashlib.blake2b:
    """A blake2b keyed by `source` that has seen nothing: a copy skips hashing the key again."""
    return hashlib.blake2b(digest_size=16, key=source.encode()[:64])


def parse_envelope_line(line: bytes | str) -> RawEnvelope:
    """A RawEnvelope from one JSON line; EnvelopeError naming the problem otherwise."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise EnvelopeError(f"envelope is not JSON: {error}") from None
    if not isinstance(record, dict):
        raise EnvelopeError("envelope is not a JSON object")
    source = record.get("source")
    if not isinstance(source, str) or not source:
        raise EnvelopeError("envelope has no `source`")
    try:
        received_at_ms = to_epoch_ms(record.get("received_at"))
    except (TypeError, ValueError, OverflowError):
        raise EnvelopeError(f"envelope `received_at` is not a timestamp: "
                            f"{record.get('received_at')!r}") from None
    record_type = record.get("record_type")
    if record_type is not None and (not isinstance(record_type, str) or not record_type):
        raise EnvelopeError(f"envelope `record_type` is not a non-empty string: {record_type!r}")
    payload = record.get("payload")
    if isinstance(payload, str):
        return RawEnvelope(source, received_at_ms, payload.encode("utf-8"), record_type)
    encoded = record.get("payload_b64")
    if isinstance(encoded, str):
        try:
            return RawEnvelope(source, received_at_ms, base64.b64decode(encoded, validate=True),
                               record_type)
        except binascii.Error:
            raise EnvelopeError("envelope `payload_b64` is not base64") from None
    raise EnvelopeError("envelope has neither a `payload` string nor a `payload_b64` string")
