"""FileSink: each batch as one JSON-lines file (optionally gzip) on any Beam filesystem.

Configuration (`sink:` of an application)::

    sink: {type: file, path: out/fleet-a, gzip: false}

`path` is a local directory or any path Beam's filesystems understand
(`s3://bucket/prefix`, ...). A batch becomes
`<path>/<yyyy-mm-ddTHH>-<batch_id>.jsonl[.gz]`, named after its first
document's event hour and its content, so writing the same batch again
replaces the same file instead of adding a second one. The file format is
`object_format.JsonLines`, the same as the object-store sinks write.

On a local directory a batch is written to a hidden temporary file beside its
name (`.<name>.<random>.tmp`), flushed to disk and renamed into place, so a file
of the batch's name is always whole: a write that fails part-way (disk full, the
directory gone or replaced, an I/O error) raises an `OSError`, which Deliver
retries, and leaves nothing behind. Other Beam filesystems (`s3://`) store an
object whole on close.
"""
from __future__ import annotations

import os
import uuid
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
            _write_whole(os.path.join(self.path, name), body)
            return
        # Uncompressed stream: `body` is already in its final form.
        with FileSystems.create(FileSystems.join(self.path, name), mime_type=content_type,
                                compression_type="uncompressed") as handle:
            handle.write(body)


def _write_whole(path: str, body: bytes) -> None:
    """`body` as the local file `path`, which is never seen half-written: a hidden
    temporary file beside it, flushed to disk, renamed into place; removed if any step fails."""
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass  # never created, or its folder is gone: nothing left to clean up
        raise
