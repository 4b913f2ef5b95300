"""FileSink: each batch as one JSON-lines file (optionally gzip) on any Beam filesystem.

Configuration (`sink:` of an application)::

    sink: {type: file, path: out/fleet-a, gzip: false}

`path` is a local directory or any path Beam's filesystems understand
(`s3://bucket/prefix`, ...). A batch becomes
`<path>/<yyyy-mm-ddTHH>-<batch_id>.jsonl[.gz]`, named after its first
document's event hour and its content, so writing the same batch again
replaces the same file instead of adding a second one.
"""
from __future__ import annotations

import gzip
import os
from datetime import datetime, timezone
from typing import Any, Mapping

from apache_beam.io.filesystems import FileSystems

from fleetstream.io.base import Batch, Batching, ConfigError, Sink


class FileSink(Sink):
    """JSON lines files, one per batch."""

    TYPE = "file"
    DEFAULT_BATCHING = Batching(max_records=50_000, max_bytes=64 << 20, max_delay_s=120.0)
    REQUIRED = frozenset({"path"})
    OPTIONAL = frozenset({"gzip"})

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        self.path = str(options["path"])
        self.gzip = options.get("gzip", False)
        if not isinstance(self.gzip, bool):
            raise ConfigError(
                f"applications[{application_id}].sink.gzip: expected true or false, "
                f"got {self.gzip!r}")

    def object_name(self, batch: Batch) -> str:
        hour = datetime.fromtimestamp(batch.event_ms / 1000, tz=timezone.utc)
        suffix = ".jsonl.gz" if self.gzip else ".jsonl"
        return f"{hour:%Y-%m-%dT%H}-{batch.batch_id}{suffix}"

    def write(self, batch: Batch) -> None:
        body = batch.jsonl()
        if self.gzip:
            body = gzip.compress(body, mtime=0)
        if "://" not in self.path:
            os.makedirs(self.path, exist_ok=True)  # object stores have no folders
        target = FileSystems.join(self.path, self.object_name(batch))
        # Uncompressed stream: `body` is already in its final form.
        with FileSystems.create(target, mime_type="application/octet-stream",
                                compression_type="uncompressed") as handle:
            handle.write(body)
