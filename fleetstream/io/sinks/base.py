"""The one interface every delivery sink implements.

A sink is a class in its own module of `fleetstream/io/`, registered in
`fleetstream/io/sinks/registry.py` under its configuration `type`. `Deliver`
(fleetstream/transforms/deliver.py) batches each application's documents with
keyed state and timers, then calls `write(batch)`; when `write` raises, Deliver
keeps the batch in state and tries it again on a timer, with exponential backoff
and jitter, and past the retry cap sends the batch to the delivery dead-letter
output. A sink therefore only writes: it neither batches, retries nor swallows
errors. It may shape Deliver's retry: `RETRY` is its own retry schedule (used
unless Deliver is given one), and an error with a `retry_after_s` attribute
(seconds, e.g. a server's Retry-After) makes Deliver wait at least that long
before the next attempt. A sink counts nothing itself (its write may run on a thread
Beam's metrics do not see): an error with a `counter` attribute (a name) is counted by
Deliver as `app/<id>.<counter>`.

One `write` runs on its application's own thread in the worker (Deliver's
`delivery_writes`), never two of one sink at once, so other applications do not wait
for it; still, it must end, written or raising, within about `WRITE_TIMEOUT_S` (every
network call with a timeout, client-side retries cut short): its application's next
batches wait behind it.

`write` must be idempotent for one batch: `batch.batch_id` is derived from the
batch's content, so an object store names the object after it and a retried
batch overwrites itself instead of duplicating.
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from fleetstream.schemas.delivery import Batch, Batching

if TYPE_CHECKING:
    from fleetstream.transforms.delivery_retry import RetryPolicy

#: about the longest one `write` may take before it raises (network timeouts included)
WRITE_TIMEOUT_S = 20.0


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
    #: Deliver's retry schedule for this sink unless Deliver is given one; None: Deliver's default
    RETRY: ClassVar[RetryPolicy | None] = None

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        """Keep and check the options; raise ConfigError naming the key."""
        self.application_id = application_id
        self.options = dict(options)
        #: the application's batching (the registry sets it from the knobs); a sink whose
        #: client batches too (Pub/Sub) sizes the client's batches by it
        self.batching = self.DEFAULT_BATCHING

    def check(self) -> None:
        """Start-up check of what can be known early (bucket exists, host resolves).

        Raise ConfigError with the reason; the default checks nothing.
        """

    def open(self) -> None:
        """Connect; called on the application's write thread before its first write there
        (and again after `close`, if the worker writes again)."""

    @abc.abstractmethod
    def write(self, batch: Batch) -> None:
        """Write one batch within about WRITE_TIMEOUT_S, raising on any failure (Deliver retries)."""

    def close(self) -> None:
        """Release connections; called on the write thread once the worker is done with it."""
