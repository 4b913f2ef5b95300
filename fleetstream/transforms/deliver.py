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

Streaming jobs batch with keyed state and timers per application and delivery
shard (`shards`: a vehicle's documents always go to the same shard, so per-vehicle
order holds; more shards spread one application's batching over more workers, at
the cost of up to that many times the writes), so they behave the same on the
DirectRunner and on Flink; batch jobs (bounded input)
batch within each bundle and flush at its end, with no state or shuffle. A failed write is retried with exponential
backoff and jitter (`RetryPolicy`: Deliver's `retry` for every sink when given, else
each sink's own `Sink.RETRY`, else the default) until the policy gives up; a
failure that carries `retry_after_s` (a server's Retry-After) waits at least
that long. Past the policy, or at once for a `PermanentWriteError`, the batch goes to the returned delivery
dead-letter PCollection with the reason and its documents whole. Nothing is
dropped.

Counters per application: `app/<id>.documents`, `.bytes`, `.batches`,
`.retries`, `.failed_batches`; the delivery latency (acknowledgement time minus
the source message's receive time) as counters per bucket, `app/<id>.latency_le_<ms>`,
and their sum `app/<id>.latency_sum_ms` (schemas/metrics.py); `dead_letters/<source>.deliver`
per document dead-lettered.
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import apache_beam as beam
import orjson
from apache_beam.coders import coders
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from fleetstream.runtime.group_in_bundle import GroupBatchesInBundle
from fleetstream.schemas.config import Application
from fleetstream.schemas.dead_letter import DEAD_LETTERS, DELIVER_STAGE, delivery_dead_letter
from fleetstream.schemas.delivery import Batch, Batching, Record
from fleetstream.schemas.errors import PermanentWriteError
from fleetstream.schemas.metrics import DEAD_LETTER_SCOPE, LATENCY_SUM_MS, latency_bucket
from fleetstream.transforms.coders import decode_records, encode_records
from fleetstream.transforms.counter_names import APP_SCOPE
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.ordering import vehicle_shard

if TYPE_CHECKING:   # io sits above transforms: its Sink is only named here
    from fleetstream.io.sinks.base import Sink

#: a fresh Sink for an application, once per worker: a module-level function (it is
#: pickled with the DoFn), e.g. `fleetstream.io.sinks.registry.application_sink`
MakeSink = Callable[[Application], "Sink"]
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff with jitter, capped per wait and in total.

    Without `schedule` the wait doubles from `initial_backoff_s` up to `max_backoff_s`;
    with one, `schedule[n - 1]` is the wait before retry `n` and the write gives up after
    the last (a schedule over hours, like the webhook sink's). Every wait is jittered to
    `1 - jitter` .. 100 % of its value; a write also gives up once the next wait would end
    past `max_elapsed_s` since its first attempt.
    """

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_elapsed_s: float = 300.0
    schedule: tuple[float, ...] = ()
    jitter: float = 0.5

    def backoff_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based), jittered."""
        if self.schedule:
            ceiling = self.schedule[min(attempt, len(self.schedule)) - 1]
        else:
            ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return ceiling * random.uniform(1.0 - self.jitter, 1.0)

    def gives_up(self, attempt: int, elapsed_s: float, wait_s: float) -> bool:
        """Whether retry number `attempt`, `wait_s` from now, is one too many."""
        return (bool(self.schedule) and attempt > len(self.schedule)) or \
            elapsed_s + wait_s > self.max_elapsed_s


DEFAULT_RETRY = RetryPolicy()


def retry_after_s(error: BaseException) -> float:
    """The least wait a failure asks for: its `retry_after_s` (e.g. an HTTP Retry-After), else 0."""
    wait = getattr(error, "retry_after_s", None)
    return float(wait) if isinstance(wait, (int, float)) and wait > 0 else 0.0


def batch_id(records: Sequence[Record]) -> str:
    """A name for a batch derived from its documents' message ids."""
    digest = hashlib.blake2b(digest_size=12)
    for record in records:
        digest.update(record.message_id.encode())
    return digest.hexdigest()


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
        if records.is_bounded and self._batches:
            batches = records | "BatchPerApplication" >> beam.ParDo(
                _BundleListBatchFn(batching)).with_output_types(Batch)
        elif records.is_bounded:
            batches = records | "BatchPerApplication" >> beam.ParDo(
                _BundleBatchFn(batching)).with_input_types(tuple[str, Record]).with_output_types(
                    Batch)
        else:
            shards = self._shards
            if not self._batches:
                records = records | "AsLists" >> beam.Map(lambda pair: [pair])
            batches = (records
                       | "GroupByApplicationAndShard" >> GroupBatchesInBundle(
                           lambda pair: (pair[0], vehicle_shard(pair[1].vin, shards)),
                           tuple[str, int])
                       | "BatchPerApplication" >> beam.ParDo(
                           _TimedBatchFn(batching, self._clock)).with_input_types(
                               _ShardedLists).with_output_types(Batch))
        written = (batches
                   | "WriteToSink" >> beam.ParDo(
                       _WriteFn(self._applications, self._make_sink, self._retry)).with_outputs(
                           DEAD_LETTERS, main="written"))
        return written[DEAD_LETTERS]


class _BundleBatchFn(beam.DoFn):
    """Batch jobs: batches by count and size within a bundle, the rest at its end.

    A batch job has all its data, so no timer is needed and no state: a bundle
    holds each vehicle's documents in order, and nothing waits past the bundle.
    """

    def __init__(self, batching: Mapping[str, Batching]) -> None:
        self._batching = dict(batching)

    def start_bundle(self) -> None:
        self._pending: dict[str, tuple[list[Record], int]] = {}

    def process(self, element: tuple[str, Record]) -> Iterable[Batch]:
        application_id, record = element
        records, nbytes = self._pending.get(application_id) or ([], 0)
        records.append(record)
        nbytes += len(record.document) + 1
        knobs = self._batching[application_id]
        if len(records) >= knobs.max_records or nbytes >= knobs.max_bytes:
            del self._pending[application_id]
            yield Batch(application_id, batch_id(records), records)
        else:
            self._pending[application_id] = (records, nbytes)

    def finish_bundle(self) -> Iterable[WindowedValue]:
        for application_id, (records, _) in self._pending.items():
            yield WindowedValue(Batch(application_id, batch_id(records), records),
                                GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._pending = {}


class _BundleListBatchFn(_BundleBatchFn):
    """`_BundleBatchFn` for lists of (application_id, Record)."""

    def process(self, element: list[tuple[str, Record]]  # type: ignore[override]
                ) -> Iterable[Batch]:
        add = super().process
        for pair in element:
            yield from add(pair)


#: ((application_id, delivery shard), the shard's (application_id, Record) pairs in one
#: bundle, in order)
_ShardedLists = tuple[tuple[str, int], list[tuple[str, Record]]]


class _TimedBatchFn(beam.DoFn):
    """Streaming: keyed state per application and shard, a processing-time timer for `max_delay`.

    Takes each bundle's records of one key as one list (`GroupBatchesInBundle`), so the
    runner's per-element cost is paid per list, not per document.
    """

    #: the batch so far: chunks of records (`encode_records`), one per call that added any
    RECORDS = BagStateSpec("records", coders.BytesCoder())
    SIZE = ReadModifyWriteStateSpec("size", coders.FastPrimitivesCoder())  # (records, bytes)
    DELAY = TimerSpec("delay", TimeDomain.REAL_TIME)
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, batching: Mapping[str, Batching], clock: Callable[[], float]) -> None:
        self._batching = dict(batching)
        self._clock = clock

    def process(self, element: _ShardedLists,
                records=beam.DoFn.StateParam(RECORDS),
                size=beam.DoFn.StateParam(SIZE),
                delay=beam.DoFn.TimerParam(DELAY),
                end=beam.DoFn.TimerParam(END),
                window=beam.DoFn.WindowParam) -> Iterable[Batch]:
        (application_id, _), arrived = element
        knobs = self._batching[application_id]
        count, nbytes = size.read() or (0, 0)
        added: list[Record] = []
        for _, record in arrived:
            if count == 0:
                end.set(window.max_timestamp())
                if knobs.max_delay_s > 0:
                    delay.set(Timestamp(self._clock() + knobs.max_delay_s))
            added.append(record)
            count, nbytes = count + 1, nbytes + len(record.document) + 1
            if count >= knobs.max_records or nbytes >= knobs.max_bytes or \
                    knobs.max_delay_s == 0:
                yield from _flush(application_id, records, size, delay, added)
                added = []
                count, nbytes = 0, 0
        if added:
            records.add(encode_records(added))
        if count:
            size.write((count, nbytes))

    @on_timer(DELAY)
    def on_delay(self, key=beam.DoFn.KeyParam, records=beam.DoFn.StateParam(RECORDS),
                 size=beam.DoFn.StateParam(SIZE),
                 delay=beam.DoFn.TimerParam(DELAY)) -> Iterable[Batch]:
        yield from _flush(key[0], records, size, delay)

    @on_timer(END)
    def on_end(self, key=beam.DoFn.KeyParam, records=beam.DoFn.StateParam(RECORDS),
               size=beam.DoFn.StateParam(SIZE),
               delay=beam.DoFn.TimerParam(DELAY)) -> Iterable[Batch]:
        yield from _flush(key[0], records, size, delay)


def _flush(application_id: str, records: Any, size: Any, delay: Any,
           added: Sequence[Record] = ()) -> Iterable[Batch]:
    """The batch: the chunks in state, then `added` (this call's records, not in state yet)."""
    batch = [record for chunk in records.read() for record in decode_records(chunk)]
    batch.extend(added)
    records.clear()
    size.clear()
    delay.clear()
    if batch:
        yield Batch(application_id, batch_id(batch), batch)


class _WriteFn(beam.DoFn):
    def __init__(self, applications: Sequence[Application], make_sink: MakeSink,
                 retry: RetryPolicy | None) -> None:
        self._applications = applications
        self._make_sink = make_sink
        self._retry = retry
        self._sinks: dict[str, Sink] = {}
        self._counts = BundleCounts()

    def setup(self) -> None:
        self._sinks = {a.id: self._make_sink(a) for a in self._applications}
        self._policies = {app: self._retry or getattr(sink, "RETRY", None) or DEFAULT_RETRY
                          for app, sink in self._sinks.items()}
        for sink in self._sinks.values():
            sink.open()

    def process(self, batch: Batch) -> Iterable[Any]:
        app = batch.application_id
        scope = APP_SCOPE + app
        failure = self._write_with_retries(self._sinks[app], self._policies[app], batch)
        if failure is not None:
            self._counts.add(f"{scope}.failed_batches")
            for record in batch.records:   # a document's `brand` is its source's name
                source = orjson.loads(record.document).get("brand", "unknown")
                self._counts.add(f"{DEAD_LETTER_SCOPE}{source}.{DELIVER_STAGE}")
            _LOG.error("delivery to %s failed for batch %s (%d documents): %s",
                       app, batch.batch_id, len(batch.records), failure)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, delivery_dead_letter(
                app, batch.batch_id, failure, [r.document for r in batch.records]))
            return
        self._counts.add(f"{scope}.documents", len(batch.records))
        self._counts.add(f"{scope}.bytes", sum(len(r.document) for r in batch.records))
        self._counts.add(f"{scope}.batches")
        now_ms = int(time.time() * 1000)
        total_ms = 0
        for record in batch.records:
            latency_ms = max(0, now_ms - record.received_ms)
            total_ms += latency_ms
            self._counts.add(f"{scope}.{latency_bucket(latency_ms)}")
        self._counts.add(f"{scope}.{LATENCY_SUM_MS}", total_ms)

    def _write_with_retries(self, sink: Sink, policy: RetryPolicy, batch: Batch) -> str | None:
        """None once written; else the reason it could not be."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                sink.write(batch)
                return None
            except PermanentWriteError as error:
                return f"{type(error).__name__}: {error}"
            except Exception as error:  # noqa: BLE001 - any sink failure is retried
                attempt += 1
                wait = max(policy.backoff_s(attempt), retry_after_s(error))
                if policy.gives_up(attempt, time.monotonic() - started, wait):
                    return f"gave up after {attempt} attempts: {type(error).__name__}: {error}"
                _LOG.warning("write to %s failed (attempt %d), retrying in %.1f s: %s",
                             batch.application_id, attempt, wait, error)
                self._counts.add(f"{APP_SCOPE}{batch.application_id}.retries")
                time.sleep(wait)

    def finish_bundle(self) -> None:
        self._counts.flush()

    def teardown(self) -> None:
        for sink in self._sinks.values():
            sink.close()
