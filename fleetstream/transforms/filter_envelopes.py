"""FilterEnvelopes: keep only the raw envelopes a replay asks for.

    selection = EnvelopeFilter(sources=frozenset({"bmw"}), from_ms=parse_time("2026-03-01"))
    kept = envelopes | FilterEnvelopes(selection)

An `EnvelopeFilter` selects by source, by receive time (`from_ms` inclusive,
`until_ms` exclusive) and by VIN. An empty set or `None` bound selects
everything. The VIN is the one the source's mapper reads from the payload, so
the VIN filter maps each envelope once more; an envelope whose VIN cannot be
read (a failed message, an unknown source) is not selected by a VIN filter.

With `batches=True` the input and output are lists of envelopes (empty lists are not
emitted). Skipped envelopes are counted in the Beam counter `fleetstream:replay.skipped`
and never reach the mapping stage: they are not read, delivered, filtered or
dead-lettered. Message ids are a pure function of the envelope, so filtering
does not change the id of any message that is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import apache_beam as beam

from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import MapPayload
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.schemas.timestamps import to_epoch_ms
from fleetstream.transforms.counter_names import REPLAY_SCOPE
from fleetstream.transforms.counters import BundleCounts

#: `fleetstream:replay.skipped` counts skipped envelopes
SKIPPED = f"{REPLAY_SCOPE}.skipped"


def parse_time(text: str, option: str) -> int:
    """Epoch ms from ISO-8601 or epoch ms/s text; ValueError naming `option` otherwise."""
    try:
        return to_epoch_ms(text)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{option}: expected an ISO-8601 time or epoch milliseconds, "
                         f"got {text!r}") from None


@dataclass(frozen=True)
class EnvelopeFilter:
    """Which envelopes to keep; the defaults keep everything."""

    sources: frozenset[str] = frozenset()
    vins: frozenset[str] = frozenset()
    from_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        if self.from_ms is not None and self.until_ms is not None \
                and self.from_ms >= self.until_ms:
            raise ValueError("--from must be earlier than --until")

    def keeps_everything(self) -> bool:
        return not self.sources and not self.vins and self.from_ms is None \
            and self.until_ms is None

    def keeps_receipt(self, source: str | None, received_at_ms: int | None) -> bool:
        """True when the source and receive time are selected (None fails any bound set)."""
        if self.sources and source not in self.sources:
            return False
        if self.from_ms is not None and (received_at_ms is None or received_at_ms < self.from_ms):
            return False
        return self.until_ms is None or (received_at_ms is not None
                                         and received_at_ms < self.until_ms)

    def keeps(self, envelope: RawEnvelope, mappers: Mapping[str, MapPayload] = MAPPERS) -> bool:
        """True when the envelope is selected; the VIN is read with `mappers`."""
        if not self.keeps_receipt(envelope.source, envelope.received_at_ms):
            return False
        if not self.vins:
            return True
        mapper = mappers.get(envelope.source)
        if mapper is None:
            return False
        payload, received_at_ms, record_type = envelope.payload, envelope.received_at_ms, \
            envelope.record_type
        result = (mapper(payload, received_at_ms) if record_type is None
                  else mapper(payload, received_at_ms, record_type))
        return result.vin in self.vins


class FilterEnvelopes(beam.PTransform):
    """RawEnvelopes -> the selected RawEnvelopes; counts the rest as `replay.skipped`."""

    def __init__(self, selection: EnvelopeFilter,
                 mappers: Mapping[str, MapPayload] | None = None,
                 batches: bool = False) -> None:
        super().__init__()
        self._selection = selection
        self._mappers = dict(MAPPERS if mappers is None else mappers)
        self._batches = batches

    def expand(self, envelopes: beam.PCollection) -> beam.PCollection:
        if self._batches:
            return envelopes | "Filter" >> beam.ParDo(
                _FilterListFn(self._selection, self._mappers)).with_output_types(
                    list[RawEnvelope])
        return envelopes | "Filter" >> beam.ParDo(
            _FilterFn(self._selection, self._mappers)).with_output_types(RawEnvelope)


class _FilterFn(beam.DoFn):
    def __init__(self, selection: EnvelopeFilter, mappers: Mapping[str, MapPayload]) -> None:
        self._selection = selection
        self._mappers = mappers
        self._counts = BundleCounts()

    def process(self, envelope: RawEnvelope) -> Iterable[RawEnvelope]:
        if self._selection.keeps(envelope, self._mappers):
            yield envelope
        else:
            self._counts.add(SKIPPED)

    def finish_bundle(self) -> None:
        self._counts.flush()


class _FilterListFn(_FilterFn):
    def process(self, envelopes: list[RawEnvelope]  # type: ignore[override]
                ) -> Iterable[list[RawEnvelope]]:
        keep = super().process
        kept = [kept for envelope in envelopes for kept in keep(envelope)]
        if kept:
            yield kept
