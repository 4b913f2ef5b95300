"""ReadEnvelopes: raw envelopes (DATA-CONTRACTS §1) from files, local or `s3://`.

    files = match_envelope_files(["archive/*.jsonl.gz"])
    read = pipeline | ReadEnvelopes(files)
    read.envelopes, read.unreadable

Files are JSON lines (`.gz` read as gzip) or the raw archive's Avro files
(`.avro`, see `archive_format`). They are matched before the job starts, so
the caller knows what will be read (and can say so when nothing matches),
then spread over the workers one file at a time (large plain JSON-lines files in 64 MB
parts). The main output holds `RawEnvelope`s (with `batches=True`, lists of up to
`BATCH_ENVELOPES` of them, so the steps after pay the runner's per-element cost per
list); `unreadable` holds a dead letter (stage `ingest`) for every line that is not an
envelope, with the line kept whole as its payload, and one for every file that breaks
off (corrupt gzip, truncated Avro): that dead letter names the file and how many
envelopes were read before the damage, and those envelopes go on through the pipeline.
Blank lines are skipped. Each worker prints its progress (files, envelopes, rate) to
stderr.
"""
from __future__ import annotations

import sys
import time
import zlib
from typing import Iterable, NamedTuple, Sequence

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from fleetstream.io.archive.format import BadLine, read_archive
from fleetstream.io.archive.layout import is_archive_file
from fleetstream.io.files.s3_objects import S3Objects
from fleetstream.runtime.group_in_bundle import batch_main_outputs
from fleetstream.schemas.dead_letter import INGEST_STAGE, dead_letter
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.transforms.counter_names import REPLAY_SCOPE
from fleetstream.transforms.counters import BundleCounts

UNREADABLE = "unreadable"  # tag of the dead-letter output and counter scope
#: counters of whole files: `fleetstream:replay.files` read, `replay.broken_files` cut short
FILES_READ = f"{REPLAY_SCOPE}.files"
BROKEN_FILES = f"{REPLAY_SCOPE}.broken_files"
#: plain JSON lines files larger than this are read in parts of this size, in parallel
PART_BYTES = 64 << 20
#: envelopes per list of the main output with `batches=True`: Beam weighs (encodes) about
#: ten of each step's first outputs and fewer later, whole lists included, so long lists
#: cost more there than they save (1,000: +0.5 CPU s on 50,000 messages against 50-200)
BATCH_ENVELOPES = 100
#: what a damaged file raises while it is read
_FILE_ERRORS = (OSError, EOFError, zlib.error, ValueError)


class EnvelopeFile(NamedTuple):
    """A matched file: its path and size in bytes."""

    path: str
    size: int


def match_envelope_files(patterns: Sequence[str], only_archive_files: bool = False
                         ) -> list[EnvelopeFile]:
    """The files matching any of `patterns` (globs; `**` crosses folders), sorted, once each.

    With `only_archive_files`, files that are not JSON lines or Avro by their
    extension are left out (an archive folder's temporary files, for one).
    """
    if not patterns:
        return []
    found: dict[str, int] = {}
    for result in FileSystems.match(list(patterns)):
        for metadata in result.metadata_list:
            found[metadata.path] = metadata.size_in_bytes
    return [EnvelopeFile(path, size) for path, size in sorted(found.items())
            if not only_archive_files or is_archive_file(path)]


def file_parts(files: Sequence[EnvelopeFile], part_bytes: int = PART_BYTES
               ) -> list[tuple[str, int, int | None]]:
    """(path, start, end) parts to read: plain JSON lines files in `part_bytes` ranges,
    every other file whole (gzip and Avro cannot start mid-file)."""
    parts: list[tuple[str, int, int | None]] = []
    for path, size in files:
        if path.endswith(".gz") or path.endswith(".avro") or size <= part_bytes:
            parts.append((path, 0, None))
        else:
            parts += [(path, start, min(start + part_bytes, size))
                      for start in range(0, size, part_bytes)]
    return parts


class ReadEnvelopes(beam.PTransform):
    """Envelope files -> RawEnvelopes, plus dead letters for unreadable lines and files."""

    def __init__(self, files: Sequence[EnvelopeFile], label: str = "replay",
                 batches: bool = False) -> None:
        super().__init__()
        self._parts = file_parts(files)
        self._label = label
        self._batches = batches

    def expand(self, begin: beam.pvalue.PBegin) -> pvalue.DoOutputsTuple:
        return (begin
                | "FileParts" >> beam.Create(self._parts, reshuffle=False)
                | "SpreadFileParts" >> beam.Reshuffle()
                | "ReadFileParts" >> beam.ParDo(_ReadEnvelopeFileFn(
                    len(self._parts), self._label, BATCH_ENVELOPES if self._batches else None))
                .with_outputs(UNREADABLE, main="envelopes"))


class _ReadEnvelopeFileFn(beam.DoFn):
    def __init__(self, total_parts: int, label: str, batch_size: int | None = None) -> None:
        self._total_parts = total_parts
        self._label = label
        self._batch_size = batch_size   # envelopes in lists of this many; None: one by one
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._s3 = S3Objects()
        self._files = self._envelopes = 0
        self._started = time.monotonic()
        self._last_report = 0.0

    def process(self, part: tuple[str, int, int | None]
                ) -> Iterable[RawEnvelope | list[RawEnvelope] | pvalue.TaggedOutput]:
        outputs = self._read(part)
        return batch_main_outputs(outputs, self._batch_size) if self._batch_size else outputs

    def _read(self, part: tuple[str, int, int | None]
              ) -> Iterable[RawEnvelope | pvalue.TaggedOutput]:
        path, start, end = part
        read = 0
        s3 = self._s3.for_path(path) if end is None else None  # parts need a seekable stream
        try:
            with (s3.open(path) if s3 else FileSystems.open(
                    path, compression_type=CompressionTypes.UNCOMPRESSED)) as stream:
                for item in read_archive(stream, path, start, end):
                    if isinstance(item, BadLine):
                        self._counts.add(f"{UNREADABLE}.read")
                        self._counts.add(f"{UNREADABLE}.failed")
                        yield pvalue.TaggedOutput(UNREADABLE, dead_letter(
                            None, None, "failed", INGEST_STAGE,
                            [{"field": "envelope", "reason": item.reason}], item.line, None))
                    else:
                        read += 1
                        yield item
        except _FILE_ERRORS as error:
            self._counts.add(BROKEN_FILES)
            yield pvalue.TaggedOutput(UNREADABLE, dead_letter(
                None, None, "failed", INGEST_STAGE, [{
                    "field": "file",
                    "reason": f"{path} could not be read to the end after {read} envelopes: "
                              f"{type(error).__name__}: {error}"}],
                path.encode("utf-8"), None))
        if end is None or start == 0:
            self._counts.add(FILES_READ)
        self._report(read)

    def _report(self, read: int) -> None:
        self._files += 1
        self._envelopes += read
        now = time.monotonic()
        if now - self._last_report < 2.0 and self._files < self._total_parts:
            return
        self._last_report = now
        rate = self._envelopes / max(now - self._started, 1e-9)
        print(f"{self._label}: this worker has read {self._files:,} of {self._total_parts:,} "
              f"file parts, {self._envelopes:,} envelopes ({rate:,.0f}/s)", file=sys.stderr,
              flush=True)

    def finish_bundle(self) -> None:
        self._counts.flush()
