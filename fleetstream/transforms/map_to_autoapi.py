"""MapToAutoApi: raw envelopes to the common model, with dead letters for what fails.

Input: `RawEnvelope`s. Main output: `(vin, MappedMessage)` for every message
that carries data (outcome ok or partial). Tagged output `dead_letters`: a
dead-letter record (DATA-CONTRACTS §5) for every failed or partial message and
every unknown source. With `batches=True` (the streaming job) the input is
lists of envelopes and the main output one list of pairs per input list
(empty lists are not emitted), so the runner's per-element cost is paid per
list. Beam counters `fleetstream:<source>.<outcome>` count
read, ok, partial, failed and ignored messages per source.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import apache_beam as beam
from apache_beam import pvalue

from fleetstream.mappers import BINARY_SOURCES, MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED, PARTIAL, MapPayload
from fleetstream.runtime.group_in_bundle import batch_main_outputs
from fleetstream.schemas.dead_letter import DEAD_LETTERS, MAP_STAGE, dead_letter
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.transforms import coders  # noqa: F401 - registers the NamedTuple coders
from fleetstream.transforms.counters import BundleCounts

UNKNOWN_SOURCE = "unknown"  # counter scope for envelopes whose source has no mapper


class MapToAutoApi(beam.PTransform):
    """Map each envelope with its source's mapper; dead letters on a tagged output."""

    def __init__(self, mappers: Mapping[str, MapPayload] | None = None,
                 batches: bool = False) -> None:
        super().__init__()
        self._mappers = dict(MAPPERS if mappers is None else mappers)
        self._batches = batches

    def expand(self, envelopes: beam.PCollection) -> pvalue.DoOutputsTuple:
        if self._batches:
            step = beam.ParDo(_MapBatchFn(self._mappers)).with_output_types(
                list[tuple[str, MappedMessage]])
        else:
            step = beam.ParDo(_MapFn(self._mappers)).with_output_types(tuple[str, MappedMessage])
        return envelopes | "Map" >> step.with_outputs(DEAD_LETTERS, main="mapped")


class _MapFn(beam.DoFn):
    def __init__(self, mappers: Mapping[str, MapPayload]) -> None:
        self._mappers = mappers
        self._counts = BundleCounts()

    def process(self, envelope: RawEnvelope) -> Iterable[Any]:
        """The envelope's dead letter (tagged), if any, then its (vin, message), if any."""
        source, received_at_ms, payload, record_type = envelope
        mapper = self._mappers.get(source)
        if mapper is None:
            self._counts.add(f"{UNKNOWN_SOURCE}.read")
            self._counts.add(f"{UNKNOWN_SOURCE}.failed")
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                source, received_at_ms, FAILED, MAP_STAGE,
                [{"field": "source", "reason": f"unknown source {source!r}; known: "
                                               f"{', '.join(sorted(self._mappers))}"}],
                payload, envelope.source_message_id(), record_type))
            return
        # a record type only where there is one: a mapper of one kind of record takes two arguments
        result = (mapper(payload, received_at_ms) if record_type is None
                  else mapper(payload, received_at_ms, record_type))
        outcome = result.outcome
        self._counts.add(f"{source}.read")
        self._counts.add(f"{source}.{outcome}")
        if outcome == IGNORED:
            return
        smid = envelope.source_message_id()
        if outcome == FAILED or outcome == PARTIAL:
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                source, received_at_ms, outcome, MAP_STAGE, result.errors, payload, smid,
                record_type, source in BINARY_SOURCES))
            if outcome == FAILED:
                return
        yield result.vin, MappedMessage(source, smid, received_at_ms,
                                        result.newest_ms or received_at_ms, result.data)

    def finish_bundle(self) -> None:
        self._counts.flush()


class _MapBatchFn(_MapFn):
    """A list of envelopes -> one list of (vin, message), and each dead letter on its own."""

    def process(self, envelopes: list[RawEnvelope]) -> Iterable[Any]:  # type: ignore[override]
        map_one = super().process
        return batch_main_outputs(output for envelope in envelopes
                                  for output in map_one(envelope))
