"""Dead letters (DATA-CONTRACTS §5): see what went wrong, and send messages through again.

    fleetstream dead-letters list --input 'out/dead_letters/*.jsonl' --reason latitude
    fleetstream dead-letters resend --input 'out/dead_letters/*.jsonl' \\
        --config config.yaml --output resent/
    fleetstream dead-letters list --input kafka://127.0.0.1:9092/dead-letters

`--input` is files (a glob, local or `s3://`) or the streaming job's
dead-letter topic, read from its start to its end at the time of the call.

`list` prints how many dead letters there are per source, stage and outcome,
and their most common reasons. `resend` turns every selected map-stage dead
letter back into the raw envelope it came from (source, receive time and the
payload kept whole) and replays those envelopes through the whole pipeline
(`run_replay`): messages a fixed mapper now reads are delivered with the
message ids a first delivery would have had, and the rest become dead letters
again, with their new reasons, under `<output>/dead_letters/`. Partial
messages were delivered in part; resending delivers them again, whole, under
the same message ids. The rebuilt envelopes are staged in a local temporary
file, so `resend` runs where that file can be read (the DirectRunner).

Ingest-stage dead letters (lines that were not envelopes) and delivery-stage
dead letters (batches a sink refused, which carry `documents`) are listed but
not resent. Selection: `--source` (repeatable), `--reason` (text found in any
error reason, any case) and `--from`/`--until` (receive time, inclusive and
exclusive); a dead letter without a source or receive time fails those filters.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import orjson
from apache_beam.io.filesystems import FileSystems

from fleetstream.io.kafka.topic_reader import KAFKA_SCHEME, parse_topic_url, read_topic
from fleetstream.pipelines.accounting import Accounting
from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.config import Config
from fleetstream.schemas.dead_letter import MAP_STAGE
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.timestamps import to_epoch_ms
from fleetstream.settings.stream import OrderSettings
from fleetstream.transforms.filter_envelopes import EnvelopeFilter

#: the keys of a map-stage dead letter that make up its raw envelope (DATA-CONTRACTS §1)
ENVELOPE_KEYS = ("source", "received_at", "payload", "payload_b64", "record_type")
#: how many of the most common reasons `list` prints
TOP_REASONS = 10


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to list or resend; the defaults select all."""

    receipt: EnvelopeFilter = EnvelopeFilter()
    reason: str = ""

    def keeps(self, record: dict[str, Any]) -> bool:
        if self.reason and not any(self.reason.lower() in str(error.get("reason", "")).lower()
                                   for error in record.get("errors") or ()):
            return False
        return self.receipt.keeps_receipt(record.get("source"), _received_at_ms(record))


def _received_at_ms(record: dict[str, Any]) -> int | None:
    try:
        return to_epoch_ms(record.get("received_at"))
    except (TypeError, ValueError, OverflowError):
        return None


def read_dead_letters(pattern: str) -> Iterator[dict[str, Any]]:
    """Every dead letter in the files matching `pattern` (local or `s3://`, `.gz` allowed),
    or in the topic `kafka://HOST:PORT/TOPIC` as it is now."""
    if pattern.startswith(KAFKA_SCHEME):
        yield from _parsed(pattern, enumerate(read_topic(*parse_topic_url(pattern)), 1))
        return
    paths = [metadata.path for match in FileSystems.match([pattern])
             for metadata in match.metadata_list]
    if not paths:
        raise ConfigError(f"--input: no dead-letter files match {pattern!r}")
    for path in sorted(paths):
        with FileSystems.open(path) as lines:
            yield from _parsed(path, enumerate(lines, 1))


def _parsed(where: str, numbered: Iterable[tuple[int, bytes]]) -> Iterator[dict[str, Any]]:
    """Dead letters from numbered JSON lines or record values; ConfigError at the first bad one."""
    for number, line in numbered:
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise ConfigError(f"{where}:{number}: not a dead letter: {error}") from None


def select_dead_letters(pattern: str, selection: DeadLetterFilter) -> Iterator[dict[str, Any]]:
    """The dead letters in `pattern` that `selection` keeps."""
    return (record for record in read_dead_letters(pattern) if selection.keeps(record))


def is_resendable(record: dict[str, Any]) -> bool:
    """True for a map-stage dead letter that still holds its source and payload."""
    return record.get("stage") == MAP_STAGE and isinstance(record.get("source"), str) \
        and ("payload" in record or "payload_b64" in record)


def envelope_line(record: dict[str, Any]) -> bytes:
    """The raw envelope a map-stage dead letter came from, as one JSON line."""
    return orjson.dumps({key: record[key] for key in ENVELOPE_KEYS if key in record},
                        option=orjson.OPT_APPEND_NEWLINE)


@dataclass
class DeadLetterSummary:
    """Counts of dead letters by source, stage, outcome and reason."""

    total: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    resendable: int = 0

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]]) -> "DeadLetterSummary":
        summary = cls()
        for record in records:
            summary.total += 1
            summary.by_source[record.get("source") or "-"] += 1
            summary.by_stage[record.get("stage") or "-"] += 1
            summary.by_outcome[record.get("outcome") or "-"] += 1
            summary.by_reason.update({str(error.get("reason")) for error in
                                      record.get("errors") or ()})
            summary.resendable += is_resendable(record)
        return summary

    def render(self) -> str:
        lines = [f"{self.total} dead letters, {self.resendable} of them map-stage "
                 f"(resendable)"]
        for title, counts in (("source", self.by_source), ("stage", self.by_stage),
                              ("outcome", self.by_outcome)):
            lines += ["", f"{title:<18}{'count':>15}"]
            lines += [f"{name:<18}{count:>15}" for name, count in sorted(counts.items())]
        lines += ["", "most common reasons"]
        lines += [f"{count:>8}  {reason}" for reason, count in
                  self.by_reason.most_common(TOP_REASONS)]
        return "\n".join(lines)


@dataclass
class Resent:
    """What `resend_dead_letters` did: envelopes resent, records left out, the replay's counts."""

    resent: int
    not_resendable: int
    accounting: Accounting


def resend_dead_letters(pattern: str, config: Config, output: str, *,
                        selection: DeadLetterFilter = DeadLetterFilter(),
                        order: OrderSettings = OrderSettings(),
                        beam_args: Sequence[str] = ()) -> Resent:
    """Replay the selected map-stage dead letters' envelopes into `output`."""
    resent = not_resendable = 0
    with tempfile.TemporaryDirectory(prefix="fleetstream-resend-") as folder:
        envelopes = os.path.join(folder, "envelopes.jsonl")
        with open(envelopes, "wb") as out:
            for record in select_dead_letters(pattern, selection):
                if is_resendable(record):
                    out.write(envelope_line(record))
                    resent += 1
                else:
                    not_resendable += 1
        if not resent:
            return Resent(0, not_resendable, Accounting())
        accounting = run_replay(envelopes, config, output=output, order=order,
                                beam_args=beam_args)
    return Resent(resent, not_resendable, accounting)
