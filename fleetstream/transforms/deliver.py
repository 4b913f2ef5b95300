"""Deliver: batch each application's documents and write them to its sink.

Input: `(application_id, Record)`, or lists of them with `batches=True` (the
streaming job; a batch job's lists, one per vehicle, are batched as they come). Each application's sink (`make_sink(application)`, in the jobs
the registry's `application_sink`, which builds the `sink.type` of its
configuration; fleetstream/io/sinks/registry.py) receives batches that
flush when any of its knobs is reached:

- `max_records` documents, or `max_bytes` of documents;
- `max_delay` seconds after the batch's first document, on a processing-time
  timer, so a quiet application is flushed without waiting for more data
  (streaming jobs; a batch job has all its data and flushes at its end);
- the end of the bundle (batch jobs) or of the window.

Streaming jobs batch and write in one keyed step per application and delivery
shard (`shards`: a vehicle's documents always go to the same shard, so per-vehicle
order holds; more shards spread one application's batching over more workers, at
the cost of up to that many times the writes), so the write happens where the
batch's state is, and they behave the same on the DirectRunner and on Flink.
A failed write never waits in the bundle: the batch stays in the key's state and is
tried again on a processing-time timer (`delivery_retry.RetryPolicy`: Deliver's `retry`
for every sink when given, else each sink's own `Sink.RETRY`, else the default;
exponential backoff and jitter, at least a failure's `retry_after_s`, e.g. a server's
Retry-After). While a key holds a failed batch, its newer documents wait behind it in
state, in order, up to the application's `max_buffer` bytes per key; documents past
that go to the dead letters at once (reason "buffer full"), so a failing sink costs
bounded state and nothing is lost silently. Once one of an application's writes failed,
that worker's other keys of the application do not try its sink before the failed
batch's next attempt (`delivery_retry.Circuit`): they hold their batches until then.
The other applications are not held at all: each write runs on its application's own
thread in the worker (`delivery_writes.WorkerWrites`, which also keeps the sinks open
across the step's instances), the step waits for it only briefly, and a write still in
flight holds its key's batch like a failure while its key asks again on the retry timer. At the end of the window (end of input,
or a drained job) what a key holds is tried once more and dead-lettered if it fails.

Batch jobs (bounded input) batch within each bundle and flush at its end, with no
state or shuffle, and retry a failed write in place, waiting per the policy but never
longer than `BOUNDED_MAX_ELAPSED_S` per batch (a batch job can be run again; its dead
letters keep the documents).

Past the policy, or at once for a `PermanentWriteError`, a batch goes to the returned
delivery dead-letter PCollection with the reason and its documents whole. Nothing is
dropped.

Counters per application: `app/<id>.documents`, `.bytes`, `.batches`,
`.retries` (failed writes that will be tried again), `.failed_batches`; the delivery
latency (acknowledgement time minus the source message's receive time) as counters per
bucket, `app/<id>.latency_le_<ms>`, and their sum `app/<id>.latency_sum_ms`
(schemas/metrics.py); `dead_letters/<source>.deliver` per document dead-lettered.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import apache_beam as beam

from fleetstream.runtime.group_in_bundle import GroupBatchesInBundle
from fleetstream.schemas.config import Application
from fleetstream.schemas.dead_letter import DEAD_LETTERS
from fleetstream.schemas.delivery import Batch, Record
from fleetstream.transforms.deliver_bounded import (BatchInBundleFn, BatchListsInBundleFn,
                                                    WriteBatchFn)
from fleetstream.transforms.deliver_streaming import BatchAndWriteFn, ShardedLists
from fleetstream.transforms.delivery_retry import RetryPolicy
from fleetstream.transforms.delivery_sinks import DeliverySinks, MakeSink
from fleetstream.transforms.ordering import vehicle_shard


class Deliver(beam.PTransform):
    """Batch per application, write to its sink; returns the delivery dead letters."""

    def __init__(self, applications: Sequence[Application], make_sink: MakeSink,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.time, shards: int = 1,
                 batches: bool = False) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self._applications = tuple(applications)
        self._make_sink = make_sink
        self._retry = retry
        self._clock = clock
        self._shards = shards
        self._batches = batches

    def expand(self, records: beam.PCollection) -> beam.PCollection[dict]:
        batching = {a.id: a.batching for a in self._applications}
        sinks = DeliverySinks(self._applications, self._make_sink, self._retry)
        if records.is_bounded:
            if self._batches:
                batches = records | "BatchPerApplication" >> beam.ParDo(
                    BatchListsInBundleFn(batching)).with_output_types(Batch)
            else:
                batches = records | "BatchPerApplication" >> beam.ParDo(
                    BatchInBundleFn(batching)).with_input_types(tuple[str, Record]).with_output_types(
                        Batch)
            written = batches | "WriteToSink" >> beam.ParDo(WriteBatchFn(sinks)).with_outputs(
                DEAD_LETTERS, main="written")
            return written[DEAD_LETTERS]
        shards = self._shards
        if not self._batches:
            records = records | "AsLists" >> beam.Map(lambda pair: [pair])
        written = (records
                   | "GroupByApplicationAndShard" >> GroupBatchesInBundle(
                       lambda pair: (pair[0], vehicle_shard(pair[1].vin, shards)), tuple[str, int])
                   | "BatchAndWrite" >> beam.ParDo(
                       BatchAndWriteFn(batching, sinks, self._clock)
                   ).with_input_types(ShardedLists).with_outputs(DEAD_LETTERS, main="written"))
        return written[DEAD_LETTERS]
