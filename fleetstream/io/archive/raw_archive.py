"""ArchiveRawEnvelopes: raw envelopes (DATA-CONTRACTS §1) into the raw archive, in windowed files.

    settings = ArchiveSettings.from_options("archive", {"path": "s3://bucket/fleet"})
    written = envelopes | ArchiveRawEnvelopes(settings)   # PCollection of the paths written

Each envelope lands in exactly one file (`archive_layout`)::

    <path>/raw/<source>/<yyyy>/<mm>/<dd>/<HH>/<source>-<window start>-<window end>-<shard>.<ext>

The envelopes are windowed into fixed windows of `window_s` seconds on their
element timestamp, and grouped by source, receive hour (UTC, of
`received_at_ms`) and shard (a CRC-32 of the payload modulo `shards`, the
same on every worker and every run). Each group becomes one file, written
when the watermark passes the window's end (Beam's default trigger: one pane
per window). Its envelopes are sorted by receive time, then payload, and
encoded by `archive_format.encode_archive` (gzip JSON lines or Avro, both
byte-for-byte deterministic). `fleetstream:archive.files` and
`fleetstream:archive.envelopes` count what was written.

Timestamps: in batch, give each element its receive time
(`TimestampedValue(e, Timestamp(micros=e.received_at_ms * 1000))`, as
`pipelines/archive.py` does) so windows follow the receive time and each
window lies in one hour folder. The streaming job's envelopes carry the Kafka
read time; an envelope received just before an hour or window boundary and read
just after it goes to the read-time window, in its receive-hour folder, so a
file name is still a function of its (source, hour, window, shard).

Writing: a file is written whole under its final name where the store
makes an upload visible only once it is complete: on S3 one PUT request per
file (through one boto3 client per worker, configured by Beam's S3 options
`--s3_endpoint_url`, `--s3_region_name`, ...), on `gs://` and `azfs://` through
Beam's `FileSystems`. A reader never sees half a file there. Elsewhere (a local
folder, HDFS) a file is written to a hidden temporary name in the same folder
(`.<name>.<random>.tmp`, which a replay does not read) and renamed over the
final name, atomically on a POSIX file system. A crash between the two leaves
the temporary file behind; the retried or restored pane writes the final name.

What a restart guarantees:

- A pane that runs again (a retried bundle, or a window that fires again
  after the job is restored from a checkpoint or savepoint) with the same
  envelopes writes the same name with the same bytes: nothing is duplicated.
  In batch, and in streaming when element timestamps are receive times, a
  pane's envelopes are a function of the input, so a rerun of the whole job
  also rewrites the same files with the same bytes.
- With the streaming job's read-time timestamps, envelopes read after the
  last checkpoint are read again after a restore and stamped anew: they fall
  into a later window. A window that fired after the checkpoint fires again
  from the restored state and its file is rewritten without them, so each is
  kept once, in its new window's file. The exception: a file written after
  the checkpoint that held *only* envelopes read after it is not rewritten
  (no restored state fires it), so those envelopes are archived twice, in that
  file and in their new window's file. The copies have the same message ids
  (a pure function of source and payload), so they can be dropped. Receive-time
  timestamps would make every restored pane rewrite its file byte for byte.
- Beam drops envelopes behind the watermark (late) at the grouping step
  (no allowed lateness). Read-time timestamps are not late (the watermark
  follows the read); a pipeline whose timestamps can be late loses those.
- A file is replaced whole; the archive never holds part of a pane.
"""
from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import FixedWindows, IntervalWindow

from fleetstream.io.archive.format import encode_archive
from fleetstream.io.archive.layout import ARCHIVE_FORMATS, HOUR_MS, archive_file
from fleetstream.io.files.s3_objects import S3Objects
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.schemas.errors import ConfigError, refuse_unknown
from fleetstream.transforms.counters import BundleCounts

#: counter scope: `fleetstream:archive.files` and `fleetstream:archive.envelopes`
ARCHIVE_SCOPE = "archive"
#: URI schemes whose objects appear whole or not at all when their upload completes
ATOMIC_PUT_SCHEMES = frozenset({"s3", "gs", "azfs"})
_MIME_TYPES = {"jsonl.gz": "application/gzip", "avro": "application/avro"}
MAX_SHARDS = 999  # the file name gives the shard three digits


@dataclass(frozen=True)
class ArchiveSettings:
    """Where and how the raw archive is written."""

    path: str                   # archive root: a folder or s3://bucket/prefix (any Beam path)
    format: str = "jsonl.gz"    # a key of ARCHIVE_FORMATS: jsonl.gz or avro
    window_s: int = 300         # file window in seconds; divides an hour
    shards: int = 1             # files per (source, hour, window), 1 to 999

    def __post_init__(self) -> None:
        _check(self.__dict__, "archive settings")

    @classmethod
    def from_options(cls, where: str, options: Mapping[str, Any]) -> "ArchiveSettings":
        """Settings from a mapping (a configuration section); ConfigError names the key."""
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}: expected a mapping with `path` and optionally "
                              f"{', '.join(_OPTIONAL)}")
        refuse_unknown(where, options, _FIELDS)
        if "path" not in options:
            raise ConfigError(f"{where}.path: missing; the archive root, a folder or "
                              f"s3://bucket/prefix")
        _check(options, where)
        return cls(**options)


_FIELDS = tuple(field.name for field in fields(ArchiveSettings))
_OPTIONAL = tuple(name for name in _FIELDS if name != "path")


def _check(values: Mapping[str, Any], where: str) -> None:
    """ConfigError naming the first field of `values` that is wrong, and its fix."""
    path = values.get("path", "")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}.path: expected the archive root, a folder or "
                          f"s3://bucket/prefix, got {path!r}")
    archive_format = values.get("format", "jsonl.gz")
    if archive_format not in ARCHIVE_FORMATS:
        raise ConfigError(f"{where}.format: must be one of {', '.join(ARCHIVE_FORMATS)}, "
                          f"got {archive_format!r}")
    window_s = values.get("window_s", 300)
    if not _is_int(window_s) or not 0 < window_s <= 3600 or 3600 % window_s:
        raise ConfigError(f"{where}.window_s: expected whole seconds that divide an hour "
                          f"(60, 300, 600, 900, 1800, 3600, ...), so no window spans two "
                          f"hour folders; got {window_s!r}")
    shards = values.get("shards", 1)
    if not _is_int(shards) or not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"{where}.shards: expected a whole number from 1 to {MAX_SHARDS} "
                          f"(files per source, hour and window); got {shards!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ArchiveRawEnvelopes(beam.PTransform):
    """RawEnvelopes -> the archive files written, one per (source, hour, window, shard)."""

    def __init__(self, settings: ArchiveSettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, envelopes: beam.PCollection[RawEnvelope]) -> beam.PCollection[str]:
        return (envelopes
                | "ArchiveWindows" >> beam.WindowInto(FixedWindows(self._settings.window_s))
                | "KeyByFile" >> beam.Map(_file_key, self._settings.shards)
                | "GroupByFile" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WriteArchiveFileFn(self._settings)))


def shard_of(payload: bytes, shards: int) -> int:
    """The payload's shard: CRC-32 modulo `shards`, the same in every process and run."""
    return zlib.crc32(payload) % shards if shards > 1 else 0


def _file_key(envelope: RawEnvelope, shards: int
              ) -> tuple[tuple[str, int, int], tuple[int, bytes, str | None]]:
    """((source, receive hour in epoch ms, shard), (received_at_ms, payload, record_type))."""
    return ((envelope.source, envelope.received_at_ms // HOUR_MS * HOUR_MS,
             shard_of(envelope.payload, shards)),
            (envelope.received_at_ms, envelope.payload, envelope.record_type))


class _WriteArchiveFileFn(beam.DoFn):
    def __init__(self, settings: ArchiveSettings) -> None:
        self._settings = settings
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._writer = WholeFileWriter()

    def process(self, group: tuple[tuple[str, int, int],
                                   Iterable[tuple[int, bytes, str | None]]],
                window: IntervalWindow = beam.DoFn.WindowParam) -> Iterable[str]:
        (source, hour_ms, shard), items = group
        settings = self._settings
        path = archive_file(settings.path, source, hour_ms,
                            (window.start.micros // 1000, window.end.micros // 1000),
                            shard, settings.format)
        envelopes = [RawEnvelope(source, at_ms, payload, record_type)
                     for at_ms, payload, record_type in sorted(items, key=_in_file_order)]
        # the name relative to the root seeds Avro's sync marker: a copied archive keeps its bytes
        name = path[len(settings.path.rstrip("/")) + 1:]
        self._writer.write(path, encode_archive(envelopes, settings.format, name),
                           _MIME_TYPES[settings.format])
        self._counts.add(f"{ARCHIVE_SCOPE}.files")
        self._counts.add(f"{ARCHIVE_SCOPE}.envelopes", len(envelopes))
        yield path

    def finish_bundle(self) -> None:
        self._counts.flush()


def _in_file_order(item: tuple[int, bytes, str | None]) -> tuple[int, bytes, str]:
    """Receive time, then payload, then record type: the same file bytes in every run."""
    at_ms, payload, record_type = item
    return at_ms, payload, record_type or ""


class WholeFileWriter:
    """Writes whole files so that a reader sees the old file or the new one, never part of one.

    `s3://` paths are one PUT request each (S3 stores an object whole or not at
    all) through one client per worker (`S3Objects`). Other paths go through
    Beam's `FileSystems`: directly where an upload is atomic (`gs://`,
    `azfs://`), elsewhere to a temporary file in the same folder that is then
    renamed over the final name.
    """

    def __init__(self) -> None:
        self._s3 = S3Objects()

    def write(self, path: str, body: bytes, mime_type: str) -> None:
        s3 = self._s3.for_path(path)
        if s3 is not None:
            s3.put(path, body, mime_type)
            return
        if FileSystems.get_scheme(path) in ATOMIC_PUT_SCHEMES:
            target = path
        else:
            folder, name = FileSystems.split(path)
            target = FileSystems.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
        with FileSystems.create(target, mime_type=mime_type,
                                compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write(body)
        if target != path:
            FileSystems.rename([target], [path])
