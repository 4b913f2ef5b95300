"""MapToAutoApi: raw envelopes to the common model, with dead letters for what fails.

Input: `RawEnvelope`s. Main output: `(vin, MappedMessage)` for every message
that carries data (outcome ok or partial). Tagged output `dead_letters`: a
dead-letter record (DATA-CONTRACTS §5) for every failed or partial message and
every unknown source. With `batches=True` (the streaming job) the input is
lists of envelopes and the main output one list of pairs per input list
(empty lists are not emitted), so the runner's per-element cost is paid per
list. Beam counters `fleetstream:<source>.<outcome>` count
read, ok, partial, failed and ignored messages per source (added to Beam once per
bundle and name: `outcome_counts`).

With `prepared_for` and `table` (a batch job's lists whose mapped data nothing else
reads) each message leaves with its `PreparedData` for the applications the activation
table approves for its vehicle, as `PermitByActivation.prepare(batches=True)` would make it
in a step of its own: the mapped data is serialised while it is fresh and freed at once,
and the step, its lists and one copy of every message are saved.
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
from fleetstream.schemas.mapped import Data, MappedMessage
from fleetstream.transforms import coders  # noqa: F401 - registers the NamedTuple coders
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.permissions import Applications, PreparedData, prepare_data

UNKNOWN_SOURCE = "unknown"  # counter scope for envelopes whose source has no mapper


class MapToAutoApi(beam.PTransform):
    """Map each envelope with its source's mapper; dead letters on a tagged output."""

    def __init__(self, mappers: Mapping[str, MapPayload] | None = None,
                 batches: bool = False, prepared_for: Applications | None = None,
                 table: beam.PCollection[dict] | None = None) -> None:
        super().__init__()
        if (prepared_for is None) != (table is None) or (prepared_for is not None
                                                         and not batches):
            raise ValueError("prepared_for and table go together, and with batches=True")
        self._mappers = dict(MAPPERS if mappers is None else mappers)
        self._batches = batches
        self._prepared_for = prepared_for
        self._table = table

    def expand(self, envelopes: beam.PCollection) -> pvalue.DoOutputsTuple:
        if self._prepared_for is not None:
            step = beam.ParDo(_MapAndPrepareFn(self._mappers, self._prepared_for),
                              pvalue.AsSingleton(self._table)).with_output_types(
                list[tuple[str, MappedMessage]])
        elif self._batches:
            step = beam.ParDo(_MapBatchFn(self._mappers)).with_output_types(
                list[tuple[str, MappedMessage]])
        else:
            step = beam.ParDo(_MapFn(self._mappers)).with_output_types(tuple[str, MappedMessage])
        return envelopes | "Map" >> step.with_outputs(DEAD_LETTERS, main="mapped")


def outcome_counts(outcomes: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Counter totals of messages counted per (source, outcome): `<source>.read` and
    `<source>.<outcome>`."""
    totals: dict[str, int] = {}
    for (source, outcome), amount in outcomes.items():
        for name in (f"{source}.read", f"{source}.{outcome}"):
            totals[name] = totals.get(name, 0) + amount
    return totals


class _MapFn(beam.DoFn):
    def __init__(self, mappers: Mapping[str, MapPayload]) -> None:
        self._mappers = mappers
        self._counts = BundleCounts()
        self._outcomes: dict[tuple[str, str], int] = {}   # this bundle's, not in _counts yet

    def process(self, envelope: RawEnvelope, table: Mapping[str, frozenset[str]] | None = None
                ) -> Iterable[Any]:
        """The envelope's dead letter (tagged), if any, then its (vin, message), if any."""
        source, received_at_ms, payload, record_type = envelope
        mapper = self._mappers.get(source)
        outcomes = self._outcomes
        if mapper is None:
            key = (UNKNOWN_SOURCE, FAILED)
            outcomes[key] = outcomes.get(key, 0) + 1
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
        key = (source, outcome)
        outcomes[key] = outcomes.get(key, 0) + 1
        if outcome == IGNORED:
            return
        smid = envelope.source_message_id()
        if outcome == FAILED or outcome == PARTIAL:
            yield pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                source, received_at_ms, outcome, MAP_STAGE, result.errors, payload, smid,
                record_type, source in BINARY_SOURCES))
            if outcome == FAILED:
                return
        vin = result.vin
        yield vin, MappedMessage(source, smid, received_at_ms,
                                 result.newest_ms or received_at_ms,
                                 self._data(vin, result.data, table))

    def _data(self, vin: str, data: Data, table: Mapping[str, frozenset[str]] | None
              ) -> Data | PreparedData:
        """What the message carries of its mapped data."""
        return data

    def finish_bundle(self) -> None:
        for name, amount in outcome_counts(self._outcomes).items():
            self._counts.add(name, amount)
        self._outcomes.clear()
        self._counts.flush()


class _MapBatchFn(_MapFn):
    """A list of envelopes -> one list of (vin, message), and each dead letter on its own."""

    def process(self, envelopes: list[RawEnvelope],  # type: ignore[override]
                table: Mapping[str, frozenset[str]] | None = None) -> Iterable[Any]:
        map_one = super().process
        return batch_main_outputs(output for envelope in envelopes
                                  for output in map_one(envelope, table))


class _MapAndPrepareFn(_MapBatchFn):
    """`_MapBatchFn` whose messages carry their `PreparedData` for the approved applications
    (side input: the activation table)."""

    def __init__(self, mappers: Mapping[str, MapPayload], applications: Applications) -> None:
        super().__init__(mappers)
        self._applications = applications

    def _data(self, vin: str, data: Data, table: Mapping[str, frozenset[str]] | None
              ) -> PreparedData:
        return prepare_data(data, self._applications, table.get(vin, ()))
