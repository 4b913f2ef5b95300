"""FileSink: each batch as one JSON-lines file (optionally gzip) on any Beam filesystem.

Configuration (`sink:` of an application)::

    sink: {type: file, path: out/fleet-a, gzip: false}

`path` is a local directory or any path Beam's filesystems understand
(`s3://bucket/prefix`, ...). A batch becomes
`<path>/<yyyy-mm-ddTHH>-<batch_id>.jsonl[.gz]`, named after its first
document's event hour and its content, so writing the same batch again
replaces the same file instead of adding a second one. The file format is
`object_format.JsonLines`, the same as the object-store sinks write.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from apache_beam.io.filesystems import FileSystems

from fleetstream.io.sinks.object.format import ObjectSink
from fleetstream.schemas.delivery import Batching


class FileSink(ObjectSink):
    """JSON lines files, one per batch."""

    TYPE = "file"
    DEFAULT_BATCHING = Batching(max_records=50_000, max_bytes=64 << 20, max_delay_s=120.0)
    REQUIRED = frozenset({"path"})
    OPTIONAL = frozenset({"gzip"})
    PATH_TEMPLATE = "{yyyy}-{mm}-{dd}T{HH}-{batch_id}"

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        self.path = str(options["path"])

    def put(self, name: str, body: bytes, content_type: str) -> None:
        if "://" not in self.path:
            os.makedirs(self.path, exist_ok=True)  # object stores have no folders
        # Uncompressed stream: `body` is already in its final form.
        with FileSystems.create(FileSystems.join(self.path, name), mime_type=content_type,
                                compression_type="uncompressed") as handle:
            handle.write(body)
