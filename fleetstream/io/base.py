"""The one interface every delivery sink implements.

A sink is a class in its own module of `fleetstream/io/`, registered in
`fleetstream/io/registry.py` under its configuration `type`. `Deliver`
(fleetstream/transforms/deliver.py) batches each application's documents with
keyed state and timers, then calls `write(batch)`; it retries a raising
`write` with exponential backoff and jitter, and past the retry cap sends the
batch to the delivery dead-letter output. A sink therefore only writes: it
neither batches, retries nor swallows errors.

`write` must be idempotent for one batch: `batch.batch_id` is derived from the
batch's content, so an object store names the object after it and a retried
batch overwrites itself instead of duplicating.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, NamedTuple, Sequence


class ConfigError(ValueError):
    """A configuration entry is wrong; the message names the entry and the fix."""


def refuse_unknown(where: str, given: Iterable[Any], accepted: Iterable[str],
                   what: str = "key", context: str = "") -> None:
    """ConfigError naming the entries of `given` not in `accepted`, and listing those accepted."""
    accepted = set(accepted)
    unknown = sorted(str(name) for name in set(given) - accepted)
    if unknown:
        raise ConfigError(f"{where}: unknown {what}(s) {', '.join(unknown)}{context}; "
                          f"accepted: {', '.join(sorted(accepted))}")


@dataclass(frozen=True, slots=True)
class Batching:
    """When a batch is flushed: whichever limit is reached first."""

    max_records: int
    max_bytes: int
    max_delay_s: float


class Record(NamedTuple):
    """One delivered document, serialised."""

    vin: str
    message_id: str
    event_ms: int       # newest entry timestamp in the document (epoch ms)
    document: bytes     # the JSON document (DATA-CONTRACTS §4), no trailing newline


class Batch(NamedTuple):
    """Documents of one application, in per-vehicle order."""

    application_id: str
    batch_id: str                # deterministic from the records' message ids
    records: Sequence[Record]

    @property
    def event_ms(self) -> int:
        """Event time that names the batch's partition (its first record's)."""
        return self.records[0].event_ms

    def jsonl(self) -> bytes:
        """The records as JSON lines."""
        return b"".join(r.document + b"\n" for r in self.records)


class Sink(abc.ABC):
    """Writes batches of one application's documents to one destination."""

    #: the `sink.type` value in configuration
    TYPE: ClassVar[str]
    #: batching when the configuration gives no knob
    DEFAULT_BATCHING: ClassVar[Batching]
    #: accepted `sink.*` keys besides `type` and the batching knobs; a missing
    #: required key or an unknown one is a start-up ConfigError
    REQUIRED: ClassVar[frozenset[str]] = frozenset()
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        """Keep and check the options; raise ConfigError naming the key."""
        self.application_id = application_id
        self.options = dict(options)

    def check(self) -> None:
        """Start-up check of what can be known early (bucket exists, host resolves).

        Raise ConfigError with the reason; the default checks nothing.
        """

    def open(self) -> None:
        """Connect; called once per worker before the first write."""

    @abc.abstractmethod
    def write(self, batch: Batch) -> None:
        """Write one batch, raising on any failure (Deliver retries)."""

    def close(self) -> None:
        """Release connections; called once per worker."""


class PermanentWriteError(Exception):
    """A write that can never succeed as it is (e.g. a record over the service's size limit).

    Deliver does not retry it: the batch goes straight to the delivery dead letters.
    """
