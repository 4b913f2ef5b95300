"""What object-store sinks share: the file format, the path template and the write.

Following Kafka Connect's storage sinks, a file sink is three independent
choices: the store (`file`, `s3`, `azure_blob`), the format and the path
template. Any format works with any store. Keys of an object sink's `sink:`
section::

    format: jsonl            # jsonl (default) or avro
    gzip: false              # jsonl: gzip the file (.jsonl.gz); avro: deflate codec
    prefix: ""               # folder in front of every object name
    path_template: "{application_id}/{yyyy}/{mm}/{dd}/{HH}/{batch_id}"

Formats:

- `jsonl`: one document per line exactly as delivered (DATA-CONTRACTS §4),
  extension `.jsonl` (`.jsonl.gz` with gzip; gzip header without a time, so
  the bytes depend only on the batch).
- `avro`: an Avro object container file (`.avro`) with the schema
  `fleetstream/schemas/document.avsc`: the document's top-level fields, with
  `data` as JSON text. Its sync marker is derived from the batch id, so the
  same batch always gives the same bytes. `read_avro_documents` turns a file
  back into documents. A document with a top-level field the schema lacks
  raises `DocumentNotInSchema`, a `PermanentWriteError`.

The path template may use `{application_id}`, `{yyyy}`, `{mm}`, `{dd}`, `{HH}`
(UTC, from the batch's event time, which is its first document's) and must use
`{batch_id}`; the format's extension is appended. Because the batch id is
derived from the batch's content, writing the same batch again overwrites the
same object instead of adding a duplicate.
"""
from __future__ import annotations

import abc
import gzip as gzip_module
import hashlib
import io
import json
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, BinaryIO, Iterator, Mapping

import fastavro
import orjson

from fleetstream.io.sinks.base import Sink
from fleetstream.schemas.delivery import Batch
from fleetstream.schemas.errors import ConfigError, PermanentWriteError, refuse_unknown

DEFAULT_PATH_TEMPLATE = "{application_id}/{yyyy}/{mm}/{dd}/{HH}/{batch_id}"
PATH_FIELDS = frozenset({"application_id", "yyyy", "mm", "dd", "HH", "batch_id"})
#: the `sink:` keys `ObjectLayout.from_options` reads
LAYOUT_OPTIONS = frozenset({"format", "gzip", "prefix", "path_template"})

DOCUMENT_SCHEMA: dict[str, Any] = fastavro.parse_schema(json.loads(
    resources.files("fleetstream.schemas").joinpath("document.avsc").read_text()))
_DATA_FIELD = "data"
_AVRO_FIELDS = tuple(field["name"] for field in DOCUMENT_SCHEMA["fields"])


@dataclass(frozen=True)
class JsonLines:
    """JSON lines, optionally gzip-compressed."""

    gzip: bool = False

    @property
    def extension(self) -> str:
        return ".jsonl.gz" if self.gzip else ".jsonl"

    @property
    def content_type(self) -> str:
        return "application/gzip" if self.gzip else "application/x-ndjson"

    def encode(self, batch: Batch) -> bytes:
        body = batch.jsonl()
        return gzip_module.compress(body, mtime=0) if self.gzip else body


@dataclass(frozen=True)
class AvroContainer:
    """An Avro object container file of delivered documents."""

    deflate: bool = False
    extension = ".avro"
    content_type = "application/avro"

    def encode(self, batch: Batch) -> bytes:
        out = io.BytesIO()
        sync_marker = hashlib.blake2b(batch.batch_id.encode(), digest_size=16).digest()
        fastavro.writer(out, DOCUMENT_SCHEMA, (_avro_record(r.document) for r in batch.records),
                        codec="deflate" if self.deflate else "null", sync_marker=sync_marker)
        return out.getvalue()


ObjectFormat = JsonLines | AvroContainer


class DocumentNotInSchema(PermanentWriteError, ValueError):
    """A document has a top-level field that document.avsc lacks: no retry can help."""


def _avro_record(document: bytes) -> dict[str, Any]:
    fields = orjson.loads(document)
    unknown = set(fields) - set(_AVRO_FIELDS)
    if unknown:
        raise DocumentNotInSchema(f"document {fields.get('message_id')!r} has field(s) "
                         f"{', '.join(sorted(unknown))} that document.avsc lacks")
    record = dict(fields)
    record[_DATA_FIELD] = orjson.dumps(fields[_DATA_FIELD]).decode()
    return record


def read_avro_documents(source: BinaryIO) -> Iterator[dict[str, Any]]:
    """The documents of an Avro file written by `AvroContainer`, as §4 dicts."""
    for record in fastavro.reader(source):
        record[_DATA_FIELD] = json.loads(record[_DATA_FIELD])
        if not record.get("late"):
            del record["late"]
        yield record


@dataclass(frozen=True)
class ObjectLayout:
    """How a batch becomes one object: its name and its bytes."""

    format: ObjectFormat
    path_template: str = DEFAULT_PATH_TEMPLATE
    prefix: str = ""

    @classmethod
    def from_options(cls, where: str, options: Mapping[str, Any],
                     default_template: str = DEFAULT_PATH_TEMPLATE) -> ObjectLayout:
        """The layout a `sink:` section asks for; `where` names it in errors."""
        compress = options.get("gzip", False)
        if not isinstance(compress, bool):
            raise ConfigError(f"{where}.gzip: expected true or false, got {compress!r}")
        kind = options.get("format", "jsonl")
        if kind == "jsonl":
            file_format: ObjectFormat = JsonLines(gzip=compress)
        elif kind == "avro":
            file_format = AvroContainer(deflate=compress)
        else:
            raise ConfigError(f"{where}.format: expected jsonl or avro, got {kind!r}")
        prefix = options.get("prefix", "")
        if not isinstance(prefix, str):
            raise ConfigError(f"{where}.prefix: expected a string, got {prefix!r}")
        template = options.get("path_template", default_template)
        _check_template(f"{where}.path_template", template)
        return cls(file_format, template, prefix.strip("/"))

    def name(self, batch: Batch) -> str:
        """The object name: prefix, rendered template and the format's extension."""
        hour = datetime.fromtimestamp(batch.event_ms / 1000, tz=timezone.utc)
        path = self.path_template.format(
            application_id=batch.application_id, batch_id=batch.batch_id,
            yyyy=f"{hour:%Y}", mm=f"{hour:%m}", dd=f"{hour:%d}", HH=f"{hour:%H}")
        name = path + self.format.extension
        return f"{self.prefix}/{name}" if self.prefix else name

    def body(self, batch: Batch) -> bytes:
        return self.format.encode(batch)


def _check_template(where: str, template: Any) -> None:
    if not isinstance(template, str):
        raise ConfigError(f"{where}: expected a string, got {template!r}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"{where}: {error} in {template!r}") from None
    refuse_unknown(where, fields, PATH_FIELDS, what="field")
    if "batch_id" not in fields:
        raise ConfigError(f"{where}: must contain {{batch_id}} so that every batch gets "
                          f"its own object and a retried batch overwrites itself")


class ObjectSink(Sink):
    """A sink that stores each batch as one object named by its `ObjectLayout`."""

    OPTIONAL = LAYOUT_OPTIONS
    #: the path template when the configuration gives none
    PATH_TEMPLATE = DEFAULT_PATH_TEMPLATE

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        self.where = f"applications[{application_id}].sink"
        self.layout = ObjectLayout.from_options(self.where, options, self.PATH_TEMPLATE)

    def store_name(self, key: str) -> str:
        """`options[key]` checked as a bucket or container name (3-63 characters)."""
        name = self.options[key]
        if not isinstance(name, str) or not 3 <= len(name) <= 63:
            raise ConfigError(f"{self.where}.{key}: expected a {key} name of 3-63 characters, "
                              f"got {name!r}")
        return name

    def write(self, batch: Batch) -> None:
        self.put(self.layout.name(batch), self.layout.body(batch), self.layout.format.content_type)

    @abc.abstractmethod
    def put(self, name: str, body: bytes, content_type: str) -> None:
        """Store `body` under `name`, replacing any object of that name."""
