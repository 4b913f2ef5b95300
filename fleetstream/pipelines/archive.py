"""The batch archive job: envelope files (local or `s3://`) into the raw archive.

    summary = run_archive("exports/*.jsonl.gz", ArchiveSettings("s3://bucket/fleet"),
                          ["--s3_endpoint_url=http://127.0.0.1:5000"])

Reads JSON-lines envelope files (`.gz` allowed, or archive Avro files) with
`ReadEnvelopes`, stamps each envelope with its receive time so windows follow
receive time, and writes them with `ArchiveRawEnvelopes`. This is how existing
files are migrated into the archive. Running it again over the same input
rewrites the same files with the same bytes. Lines that are not envelopes
(and files that break off) cannot be placed in the archive: they are counted
in the summary as `unreadable` and not written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.timestamp import Timestamp

from fleetstream.io.archive.raw_archive import ARCHIVE_SCOPE, ArchiveRawEnvelopes, ArchiveSettings
from fleetstream.io.files.envelope_files import UNREADABLE, ReadEnvelopes, match_envelope_files
from fleetstream.pipelines.accounting import Accounting
from fleetstream.runtime.job_streams import wait_until_done
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.transforms.counter_names import NAMESPACE


@dataclass(frozen=True)
class ArchiveSummary:
    """What an archive job did."""

    files: int          # archive files written
    envelopes: int      # envelopes archived
    unreadable: int     # lines that are not envelopes, and files that broke off: not archived


def run_archive(input_pattern: str, settings: ArchiveSettings,
                beam_args: Sequence[str] = ()) -> ArchiveSummary:
    """Archive the envelopes of the files matching `input_pattern`; ValueError if none match."""
    options = PipelineOptions(list(beam_args))
    FileSystems.set_options(options)
    files = match_envelope_files([input_pattern])
    if not files:
        raise ValueError(f"--input: no file matches {input_pattern!r}")
    print(f"archive: {len(files):,} files, {sum(f.size for f in files) / 1e6:,.1f} MB to read, "
          f"writing to {settings.path}/raw/", file=sys.stderr)
    pipeline = beam.Pipeline(options=options)
    read = pipeline | "ReadEnvelopes" >> ReadEnvelopes(files, label="archive")
    _ = (read.envelopes
         | "StampReceiveTime" >> beam.Map(_at_receive_time)
         | "Archive" >> ArchiveRawEnvelopes(settings))
    _ = read[UNREADABLE] | "CountUnreadable" >> beam.Map(_count_unreadable)
    result = pipeline.run()
    wait_until_done(result)
    accounting = Accounting.from_result(result)
    return ArchiveSummary(accounting.get(ARCHIVE_SCOPE, "files"),
                          accounting.get(ARCHIVE_SCOPE, "envelopes"),
                          accounting.get(ARCHIVE_SCOPE, "unreadable"))


def _at_receive_time(envelope: RawEnvelope) -> beam.window.TimestampedValue:
    return beam.window.TimestampedValue(envelope,
                                        Timestamp(micros=envelope.received_at_ms * 1000))


_UNREADABLE = beam.metrics.Metrics.counter(NAMESPACE, f"{ARCHIVE_SCOPE}.unreadable")


def _count_unreadable(dead_letter: Any) -> None:
    _UNREADABLE.inc()
