"""Deliver in a batch job (bounded input): batches cut within each bundle and flushed at
its end, with no state or shuffle; each written in place and retried per its policy, but
never longer than `BOUNDED_MAX_ELAPSED_S` (a batch job can be run again; its dead letters
keep the documents)."""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from fleetstream.schemas.delivery import Batch, Batching, Record
from fleetstream.schemas.errors import PermanentWriteError
from fleetstream.transforms.delivery_batches import batch_id, record_size
from fleetstream.transforms.delivery_retry import failure_reason, next_attempt
from fleetstream.transforms.delivery_sinks import DeliverySinks

#: a batch job's longest retrying of one batch, whatever its policy allows
BOUNDED_MAX_ELAPSED_S = 300.0


class BatchInBundleFn(beam.DoFn):
    """Batch jobs: batches by count and size within a bundle, the rest at its end.

    A batch job has all its data, so no timer is needed and no state: a bundle
    holds each vehicle's documents in order, and nothing waits past the bundle.
    """

    def __init__(self, batching: Mapping[str, Batching]) -> None:
        self._batching = dict(batching)

    def start_bundle(self) -> None:
        self._pending: dict[str, tuple[list[Record], int]] = {}

    def process(self, element: tuple[str, Record]) -> Iterable[Batch]:
        full = self._add(element)
        if full is not None:
            yield full

    def _add(self, element: tuple[str, Record]) -> Batch | None:
        """Add a document to its application's batch: the batch if that filled it."""
        application_id, record = element
        records, nbytes = self._pending.get(application_id) or ([], 0)
        records.append(record)
        nbytes += record_size(record)
        knobs = self._batching[application_id]
        if len(records) >= knobs.max_records or nbytes >= knobs.max_bytes:
            del self._pending[application_id]
            return Batch(application_id, batch_id(records), records)
        self._pending[application_id] = (records, nbytes)
        return None

    def finish_bundle(self) -> Iterable[WindowedValue]:
        for application_id, (records, _) in self._pending.items():
            yield WindowedValue(Batch(application_id, batch_id(records), records),
                                GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._pending = {}


class BatchListsInBundleFn(BatchInBundleFn):
    """`BatchInBundleFn` for lists of (application_id, Record)."""

    def process(self, element: list[tuple[str, Record]]  # type: ignore[override]
                ) -> Iterable[Batch]:
        add = self._add
        for pair in element:
            full = add(pair)
            if full is not None:
                yield full


class WriteBatchFn(beam.DoFn):
    """Batch jobs: each batch written in place, retried per its policy for at most
    `BOUNDED_MAX_ELAPSED_S`, else dead-lettered."""

    def __init__(self, sinks: DeliverySinks) -> None:
        self._sinks = sinks

    def setup(self) -> None:
        self._sinks.open()

    def process(self, batch: Batch) -> Iterable[Any]:
        app = batch.application_id
        policy = self._sinks.policies[app]
        started = time.monotonic()
        failures = 0
        while (error := self._sinks.write(batch)) is not None:
            if isinstance(error, PermanentWriteError):
                yield self._sinks.dead_letter(app, batch.records, failure_reason(error))
                return
            failures += 1
            now = time.monotonic()
            due = next_attempt(policy, failures, started, now, error)
            if due is None or due - started > BOUNDED_MAX_ELAPSED_S:
                yield self._sinks.dead_letter(
                    app, batch.records, f"gave up after {failures} attempts: {failure_reason(error)}")
                return
            self._sinks.retrying(app, failures, due - now, error)
            time.sleep(due - now)

    def finish_bundle(self) -> None:
        self._sinks.counts.flush()

    def teardown(self) -> None:
        self._sinks.close(linger=False)
