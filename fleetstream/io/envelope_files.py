"""ReadEnvelopes: raw envelopes (DATA-CONTRACTS §1) from JSON-lines files, local or `s3://`.

    envelopes, unreadable = pipeline | ReadEnvelopes("archive/*.jsonl.gz")

Files are matched with Beam's filesystems (globs; `.gz` read as gzip) and read
line by line as bytes. The main output holds `RawEnvelope`s; `unreadable`
holds a dead letter (stage `ingest`) for every line that is not an envelope,
with the line kept whole as its payload. Blank lines are skipped.
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import coders

from fleetstream.schemas.dead_letter import INGEST_STAGE, dead_letter
from fleetstream.schemas.envelope import EnvelopeError, RawEnvelope, parse_envelope_line
from fleetstream.transforms.counters import BundleCounts

UNREADABLE = "unreadable"  # tag of the dead-letter output and counter scope


class ReadEnvelopes(beam.PTransform):
    """Envelope files -> RawEnvelopes, plus dead letters for unreadable lines."""

    def __init__(self, file_pattern: str) -> None:
        super().__init__()
        self._pattern = file_pattern

    def expand(self, begin: beam.pvalue.PBegin) -> pvalue.DoOutputsTuple:
        return (begin
                | "ReadLines" >> beam.io.ReadFromText(self._pattern, coder=coders.BytesCoder())
                | "ParseEnvelopes" >> beam.ParDo(_ParseEnvelopeFn()).with_outputs(
                    UNREADABLE, main="envelopes"))


class _ParseEnvelopeFn(beam.DoFn):
    def __init__(self) -> None:
        self._counts = BundleCounts()

    def process(self, line: bytes) -> Iterable[RawEnvelope | pvalue.TaggedOutput]:
        if not line.strip():
            return
        try:
            yield parse_envelope_line(line)
        except EnvelopeError as error:
            self._counts.add(f"{UNREADABLE}.read")
            self._counts.add(f"{UNREADABLE}.failed")
            yield pvalue.TaggedOutput(UNREADABLE, dead_letter(
                None, None, "failed", INGEST_STAGE, [{"field": "envelope", "reason": str(error)}],
                line, None))

    def finish_bundle(self) -> None:
        self._counts.flush()
