"""The bytes of a raw archive file: gzip JSON lines or an Avro container, and back.

- `jsonl.gz`: one envelope (DATA-CONTRACTS §1) per line, gzip without a time
  in its header, so the bytes depend only on the envelopes.
- `avro`: an Avro object container (`fleetstream/schemas/envelope.avsc`,
  deflate) whose sync marker is derived from the file's name, for the same
  reason.

`read_archive` reads either (and plain `.jsonl`) back, one item a line or
record: a `RawEnvelope`, or a `BadLine` for a line that is not an envelope.
A file that is damaged as a whole (corrupt gzip, truncated Avro) raises while
it is read; what came before was already yielded.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, BinaryIO, Iterable, Iterator, NamedTuple

import fastavro

from fleetstream.io.archive.layout import ARCHIVE_FORMATS
from fleetstream.schemas.envelope import EnvelopeError, RawEnvelope, parse_envelope_line

_ENVELOPE_AVSC = json.loads(
    resources.files("fleetstream.schemas").joinpath("envelope.avsc").read_text())
ENVELOPE_SCHEMA: dict[str, Any] = fastavro.parse_schema(_ENVELOPE_AVSC)
#: the schema of files that hold record types (DATA-CONTRACTS §1): one optional field more,
#: so that every other source's files keep the bytes they always had
ENVELOPE_WITH_RECORD_TYPE_SCHEMA: dict[str, Any] = fastavro.parse_schema({
    **_ENVELOPE_AVSC, "fields": [*_ENVELOPE_AVSC["fields"], {
        "name": "record_type", "type": ["null", "string"], "default": None,
        "doc": "the kind of record where the transport names it (a fleet-telemetry topic)"}]})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


class BadLine(NamedTuple):
    """A line of a JSON-lines file that is not an envelope, kept whole, and why."""

    line: bytes
    reason: str


def encode_archive(envelopes: Iterable[RawEnvelope], archive_format: str, name: str) -> bytes:
    """The file's bytes in `archive_format` (a key of ARCHIVE_FORMATS); `name` seeds Avro's
    sync marker."""
    if archive_format not in ARCHIVE_FORMATS:
        raise ValueError(f"archive format must be one of {', '.join(ARCHIVE_FORMATS)}, "
                         f"got {archive_format!r}")
    if archive_format == "jsonl.gz":
        return gzip.compress(b"".join(e.to_json_line() + b"\n" for e in envelopes), mtime=0)
    out = io.BytesIO()
    envelopes = list(envelopes)
    if any(e.record_type is not None for e in envelopes):
        schema = ENVELOPE_WITH_RECORD_TYPE_SCHEMA
        records = ({"source": e.source, "received_at": e.received_at_ms, "payload": e.payload,
                    "record_type": e.record_type} for e in envelopes)
    else:
        schema = ENVELOPE_SCHEMA
        records = ({"source": e.source, "received_at": e.received_at_ms, "payload": e.payload}
                   for e in envelopes)
    fastavro.writer(out, schema, records,
                    codec="deflate",
                    sync_marker=hashlib.blake2b(name.encode(), digest_size=16).digest())
    return out.getvalue()


def read_archive(stream: BinaryIO, path: str, start: int = 0, end: int | None = None
                 ) -> Iterator[RawEnvelope | BadLine]:
    """The envelopes (and bad lines) of one archive file; its kind comes from `path`.

    For plain JSON lines, `start` and `end` select the lines that begin in
    that byte range, so a large file can be read in parts.
    """
    if path.endswith(".avro"):
        for record in fastavro.reader(stream):
            received = record["received_at"]
            if isinstance(received, datetime):
                received = (received - _EPOCH) // _MILLISECOND
            yield RawEnvelope(record["source"], received, record["payload"],
                              record.get("record_type"))
        return
    lines = gzip.GzipFile(fileobj=stream) if path.endswith(".gz") else _lines_from(
        stream, start, end)
    for line in lines:
        if not line.strip():
            continue
        try:
            yield parse_envelope_line(line)
        except EnvelopeError as error:
            yield BadLine(line.rstrip(b"\r\n"), str(error))


def _lines_from(stream: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    """The lines of `stream` that begin at or after byte `start` and before byte `end`."""
    position = start
    if start:
        stream.seek(start - 1)
        position += len(stream.readline()) - 1  # the rest of the line begun before `start`
    for line in stream:
        if end is not None and position >= end:
            return
        position += len(line)
        yield line
