"""DeliverySinks: what both of Deliver's paths share about the sinks: each application's
retry policy, its writes in a worker (`delivery_writes.WorkerWrites`), and what writing
counts (documents, bytes, batches, latency buckets, retries, dead letters)."""
from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Callable, Sequence

import apache_beam as beam
import orjson

from fleetstream.schemas.config import Application
from fleetstream.schemas.dead_letter import DEAD_LETTERS, DELIVER_STAGE, delivery_dead_letter
from fleetstream.schemas.delivery import Batch, Record
from fleetstream.schemas.metrics import DEAD_LETTER_SCOPE, LATENCY_SUM_MS, latency_counts
from fleetstream.transforms.counter_names import APP_SCOPE
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.delivery_batches import batch_id
from fleetstream.transforms.delivery_retry import DEFAULT_RETRY, RetryPolicy
from fleetstream.transforms.delivery_writes import WorkerWrites, worker_writes

if TYPE_CHECKING:   # io sits above transforms: its Sink is only named here
    from fleetstream.io.sinks.base import Sink

#: a fresh Sink for an application, once per worker: a module-level function (it is
#: pickled with the DoFn), e.g. `fleetstream.io.sinks.registry.application_sink`
MakeSink = Callable[[Application], "Sink"]
_LOG = logging.getLogger(__name__)


class DeliverySinks:
    """Each application's retry policy and, in a worker, its sink's writes
    (`delivery_writes.WorkerWrites`, shared by the step's instances in the process), and
    what writing them counts."""

    def __init__(self, applications: Sequence[Application], make_sink: MakeSink,
                 retry: RetryPolicy | None) -> None:
        self._applications = {a.id: a for a in applications}
        self._make_sink = make_sink
        #: names this Deliver step's writes in each worker process
        self.name = uuid.uuid4().hex
        self.policies = {a.id: retry or getattr(make_sink(a), "RETRY", None) or DEFAULT_RETRY
                         for a in applications}
        self.counts = BundleCounts()

    def open(self) -> None:
        self.writes: WorkerWrites = worker_writes(self.name, self.make)
        self.writes.hold()

    def make(self, application_id: str) -> Sink:
        """A new (unopened) sink of the application."""
        return self._make_sink(self._applications[application_id])

    def write(self, batch: Batch) -> Exception | None:
        """One attempt, waited for: None once written (counted), else the failure."""
        outcome = self.writes.attempt(batch, inline_s=None)
        if outcome is not None and outcome.error is not None:
            return self.failed(batch.application_id, outcome.error)
        self.written(batch)
        return None

    def failed(self, application_id: str, error: Exception) -> Exception:
        """`error`, once the counter it names (`Sink` contract: a `counter` attribute) is
        counted: a sink's write may run where Beam's metrics do not reach."""
        counter = getattr(error, "counter", None)
        if counter:
            self.counts.add(f"{APP_SCOPE}{application_id}.{counter}")
        return error

    def written(self, batch: Batch) -> None:
        """Count a batch its sink acknowledged."""
        scope = APP_SCOPE + batch.application_id
        nbytes = 0
        received_ms = []
        for record in batch.records:
            nbytes += len(record.document)
            received_ms.append(record.received_ms)
        self.counts.add(f"{scope}.documents", len(batch.records))
        self.counts.add(f"{scope}.bytes", nbytes)
        self.counts.add(f"{scope}.batches")
        buckets, total_ms = latency_counts(int(time.time() * 1000), received_ms)
        for bucket, amount in buckets.items():
            self.counts.add(f"{scope}.{bucket}", amount)
        self.counts.add(f"{scope}.{LATENCY_SUM_MS}", total_ms)

    def retrying(self, application_id: str, failures: int, wait_s: float, error: Exception) -> None:
        self.counts.add(f"{APP_SCOPE}{application_id}.retries")
        _LOG.warning("write to %s failed (attempt %d), retrying in %.1f s: %s",
                     application_id, failures, wait_s, error)

    def dead_letter(self, application_id: str, records: Sequence[Record],
                    reason: str) -> beam.pvalue.TaggedOutput:
        """The records as one delivery dead letter, counted."""
        self.counts.add(f"{APP_SCOPE}{application_id}.failed_batches")
        for record in records:   # a document's `brand` is its source's name
            source = orjson.loads(record.document).get("brand", "unknown")
            self.counts.add(f"{DEAD_LETTER_SCOPE}{source}.{DELIVER_STAGE}")
        name = batch_id(records)
        _LOG.error("delivery to %s failed for batch %s (%d documents): %s",
                   application_id, name, len(records), reason)
        return beam.pvalue.TaggedOutput(DEAD_LETTERS, delivery_dead_letter(
            application_id, name, reason, [r.document for r in records]))

    def close(self, linger: bool = True) -> None:
        self.writes.release(linger)
