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

import hashlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

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
from fleetstream.schemas.metrics import DEAD_LETTER_SCOPE, LATENCY_SUM_MS, latency_counts
from fleetstream.transforms.coders import decode_records, encode_records
from fleetstream.transforms.counter_names import APP_SCOPE
from fleetstream.transforms.counters import BundleCounts
from fleetstream.transforms.delivery_retry import (DEFAULT_RETRY, Circuit, RetryPolicy,
                                                   failure_reason, next_attempt, worker_circuit)
from fleetstream.transforms.delivery_writes import (FIRST_INLINE_S, POLL_S, RETRY_INLINE_S,
                                                    Outcome, WorkerWrites, worker_writes)
from fleetstream.transforms.ordering import vehicle_shard

if TYPE_CHECKING:   # io sits above transforms: its Sink is only named here
    from fleetstream.io.sinks.base import Sink

#: a fresh Sink for an application, once per worker: a module-level function (it is
#: pickled with the DoFn), e.g. `fleetstream.io.sinks.registry.application_sink`
MakeSink = Callable[[Application], "Sink"]
#: a batch job's longest retrying of one batch, whatever its policy allows
BOUNDED_MAX_ELAPSED_S = 300.0
#: at the end of the window, how long a held batch's attempt in flight is waited for
END_WAIT_S = 30.0
_LOG = logging.getLogger(__name__)


def batch_id(records: Sequence[Record]) -> str:
    """A name for a batch derived from its documents' message ids."""
    digest = hashlib.blake2b(digest_size=12)
    for record in records:
        digest.update(record.message_id.encode())
    return digest.hexdigest()


def record_size(record: Record) -> int:
    """A document's bytes as the batching knobs count them (with its newline)."""
    return len(record.document) + 1


def cut_batches(records: Sequence[Record], knobs: Batching) -> Iterator[list[Record]]:
    """`records` in order as batches of at most `max_records` and about `max_bytes` each
    (a batch closes at the document that reaches either)."""
    batch: list[Record] = []
    nbytes = 0
    for record in records:
        batch.append(record)
        nbytes += record_size(record)
        if len(batch) >= knobs.max_records or nbytes >= knobs.max_bytes:
            yield batch
            batch, nbytes = [], 0
    if batch:
        yield batch


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
        sinks = _Sinks(self._applications, self._make_sink, self._retry)
        if records.is_bounded:
            if self._batches:
                batches = records | "BatchPerApplication" >> beam.ParDo(
                    _BundleListBatchFn(batching)).with_output_types(Batch)
            else:
                batches = records | "BatchPerApplication" >> beam.ParDo(
                    _BundleBatchFn(batching)).with_input_types(tuple[str, Record]).with_output_types(
                        Batch)
            written = batches | "WriteToSink" >> beam.ParDo(_WriteFn(sinks)).with_outputs(
                DEAD_LETTERS, main="written")
            return written[DEAD_LETTERS]
        shards = self._shards
        if not self._batches:
            records = records | "AsLists" >> beam.Map(lambda pair: [pair])
        written = (records
                   | "GroupByApplicationAndShard" >> GroupBatchesInBundle(
                       lambda pair: (pair[0], vehicle_shard(pair[1].vin, shards)), tuple[str, int])
                   | "BatchAndWrite" >> beam.ParDo(
                       _BatchAndWriteFn(batching, sinks, self._clock)
                   ).with_input_types(_ShardedLists).with_outputs(DEAD_LETTERS, main="written"))
        return written[DEAD_LETTERS]


class _Sinks:
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


class _BundleListBatchFn(_BundleBatchFn):
    """`_BundleBatchFn` for lists of (application_id, Record)."""

    def process(self, element: list[tuple[str, Record]]  # type: ignore[override]
                ) -> Iterable[Batch]:
        add = self._add
        for pair in element:
            full = add(pair)
            if full is not None:
                yield full


class _WriteFn(beam.DoFn):
    """Batch jobs: each batch written in place, retried per its policy for at most
    `BOUNDED_MAX_ELAPSED_S`, else dead-lettered."""

    def __init__(self, sinks: _Sinks) -> None:
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


class _Wait(NamedTuple):
    """A batch not written yet: ask again at `until`; `reason` when its application's sink
    failed (the circuit holds it), None while a write is in flight."""

    until: float
    reason: str | None


#: ((application_id, delivery shard), the shard's (application_id, Record) pairs in one
#: bundle, in order)
_ShardedLists = tuple[tuple[str, int], list[tuple[str, Record]]]


class _Key:
    """One (application, shard)'s state, read once per call and saved at its end.

    `pending`: the documents not written yet, in order (chunks of `encode_records`, one per
    call that added any, plus `added`, this call's, not in state yet). `held`: the batch that
    failed (or waits for the application's circuit) and its retry bookkeeping,
    `(encoded records, failed attempts, first due time, last failure)`; while there is one,
    nothing of the key is written before it.
    """

    def __init__(self, pending: Any, size: Any, held: Any) -> None:
        self._pending, self._size, self._held = pending, size, held
        self.count, self.nbytes, self.held_count, self.held_bytes = size.read() or (0, 0, 0, 0)
        self.added: list[Record] = []

    @property
    def blocked(self) -> bool:
        return self.held_count > 0

    @property
    def buffered_bytes(self) -> int:
        return self.nbytes + self.held_bytes

    def add(self, record: Record) -> None:
        self.added.append(record)
        self.count += 1
        self.nbytes += record_size(record)

    def take_pending(self) -> list[Record]:
        """Every pending document, in order; the key then has none."""
        records = [record for chunk in self._pending.read() for record in decode_records(chunk)]
        records.extend(self.added)
        self._pending.clear()
        self.added, self.count, self.nbytes = [], 0, 0
        return records

    def held_batch(self) -> tuple[list[Record], int, float, str] | None:
        if not self.blocked:
            return None
        encoded, failures, first_s, reason = self._held.read()
        return decode_records(encoded), failures, first_s, reason

    def last_failure(self) -> str:
        return self._held.read()[3] if self.blocked else ""

    def hold(self, records: Sequence[Record], failures: int, first_s: float, reason: str) -> None:
        self._held.write((encode_records(records), failures, first_s, reason))
        self.held_count, self.held_bytes = len(records), sum(map(record_size, records))

    def release(self) -> None:
        self._held.clear()
        self.held_count = self.held_bytes = 0

    def save(self) -> None:
        if self.added:
            self._pending.add(encode_records(self.added))
            self.added = []
        if self.count or self.held_count:
            self._size.write((self.count, self.nbytes, self.held_count, self.held_bytes))
        else:
            self._size.clear()


class _BatchAndWriteFn(beam.DoFn):
    """Streaming: batch in keyed state per application and shard, write, hold what failed.

    Takes each bundle's records of one key as one list (`GroupBatchesInBundle`), so the
    runner's per-element cost is paid per list, not per document. Counters are handed to
    Beam at the end of each call, timers' included (as `OrderAndPermitKeyed` does). Timers: `delay`
    (`max_delay` after a batch's first document), `retry` (the held batch's next
    attempt), `end` (the window's end: everything is tried once more, and what fails is
    dead-lettered).
    """

    PENDING = BagStateSpec("records", coders.BytesCoder())
    #: (pending documents, their bytes, held documents, their bytes)
    SIZE = ReadModifyWriteStateSpec("size", coders.FastPrimitivesCoder())
    HELD = ReadModifyWriteStateSpec("held", coders.FastPrimitivesCoder())
    DELAY = TimerSpec("delay", TimeDomain.REAL_TIME)
    RETRY = TimerSpec("retry", TimeDomain.REAL_TIME)
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, batching: Mapping[str, Batching], sinks: _Sinks,
                 clock: Callable[[], float]) -> None:
        self._batching = dict(batching)
        self._sinks = sinks
        self._clock = clock

    def setup(self) -> None:
        self._sinks.open()
        self._circuit: Circuit = worker_circuit(self._sinks.name)

    def process(self, element: _ShardedLists,
                pending=beam.DoFn.StateParam(PENDING),
                size=beam.DoFn.StateParam(SIZE),
                held=beam.DoFn.StateParam(HELD),
                delay=beam.DoFn.TimerParam(DELAY),
                retry=beam.DoFn.TimerParam(RETRY),
                end=beam.DoFn.TimerParam(END),
                window=beam.DoFn.WindowParam) -> Iterable[Any]:
        (app, _), arrived = element
        knobs = self._batching[app]
        key = _Key(pending, size, held)
        overflow: list[Record] = []
        for _, record in arrived:
            if key.blocked:
                if key.buffered_bytes + record_size(record) > knobs.max_buffer_bytes:
                    overflow.append(record)
                else:
                    key.add(record)
                continue
            if key.count == 0:
                end.set(window.max_timestamp())
                if knobs.max_delay_s > 0:
                    delay.set(Timestamp(self._clock() + knobs.max_delay_s))
            key.add(record)
            if key.count >= knobs.max_records or key.nbytes >= knobs.max_bytes or \
                    knobs.max_delay_s == 0:
                delay.clear()
                yield from self._send(app, key, retry, key.take_pending())
        if overflow:
            yield self._sinks.dead_letter(app, overflow, (
                f"buffer full: {key.buffered_bytes} bytes already wait for the sink of {app} in "
                f"this delivery shard (max_buffer {knobs.max_buffer_bytes}); last failure: "
                f"{key.last_failure()}"))
        self._done(key)

    @on_timer(DELAY)
    def on_delay(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
                 size=beam.DoFn.StateParam(SIZE), held=beam.DoFn.StateParam(HELD),
                 retry=beam.DoFn.TimerParam(RETRY)) -> Iterable[Any]:
        state = _Key(pending, size, held)
        if not state.blocked:   # a held batch's retry writes the pending documents after it
            yield from self._send(key[0], state, retry, state.take_pending())
        self._done(state)

    @on_timer(RETRY)
    def on_retry(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
                 size=beam.DoFn.StateParam(SIZE), held=beam.DoFn.StateParam(HELD),
                 retry=beam.DoFn.TimerParam(RETRY)) -> Iterable[Any]:
        state = _Key(pending, size, held)
        waiting = state.held_batch()
        if waiting is not None:
            state.release()
            yield from self._send(key[0], state, retry, waiting[0], waiting[1:])
            if not state.blocked:
                yield from self._send(key[0], state, retry, state.take_pending())
        self._done(state)

    @on_timer(END)
    def on_end(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
               size=beam.DoFn.StateParam(SIZE), held=beam.DoFn.StateParam(HELD),
               delay=beam.DoFn.TimerParam(DELAY),
               retry=beam.DoFn.TimerParam(RETRY)) -> Iterable[Any]:
        app = key[0]
        state = _Key(pending, size, held)
        waiting = state.held_batch()
        state.release()
        delay.clear()
        retry.clear()
        batches = [waiting[0]] if waiting else []
        batches.extend(cut_batches(state.take_pending(), self._batching[app]))
        writes = self._sinks.writes
        for records in batches:
            batch = Batch(app, batch_id(records), records)
            outcome = writes.finish(app, batch.batch_id, END_WAIT_S)
            if outcome is None or outcome.error is not None:   # none in flight, or it failed
                outcome = writes.attempt(batch, END_WAIT_S)
            if outcome is not None and outcome.error is None:
                self._sinks.written(batch)
            else:
                failure = (failure_reason(self._sinks.failed(app, outcome.error))
                           if outcome is not None
                           else f"no answer within {END_WAIT_S:g} s")
                yield self._sinks.dead_letter(
                    app, records, f"the window ended (end of input or a drained job) while the "
                                  f"sink failed: {failure}")
        self._done(state)

    def _done(self, key: _Key) -> None:
        """End of a call: the key's state saved, the counts handed to Beam."""
        key.save()
        self._sinks.counts.flush()

    def _send(self, app: str, key: _Key, retry: Any, records: Sequence[Record],
              retried: tuple[int, float, str] | None = None) -> Iterator[Any]:
        """Write `records` as batches in order, unless the key is held; from the first batch
        that fails (or that the application's circuit holds) on, the rest stay pending.

        `retried`: `records` are one held batch, with its (failures, first due time, reason).
        """
        policy = self._sinks.policies[app]
        batches = [list(records)] if retried else cut_batches(records, self._batching[app])
        for batch in batches:
            if key.blocked:
                for record in batch:
                    key.add(record)
                continue
            now = self._clock()
            failures, first_s, reason = retried or (0, now, "")
            retried = None
            written = Batch(app, batch_id(batch), batch)
            outcome = self._attempt(written, failures, now)
            if isinstance(outcome, _Wait):   # in flight, or the application's sink is held
                if outcome.reason is not None and policy.gives_up(
                        failures + 1, now - first_s, outcome.until - now):
                    yield self._sinks.dead_letter(
                        app, batch, f"gave up after {failures} attempts: {outcome.reason}")
                    continue
                key.hold(batch, failures, first_s, outcome.reason or reason)
                retry.set(Timestamp(outcome.until))
                continue
            if outcome.error is None:
                self._sinks.written(written)
                self._circuit.close(app)
                continue
            error = self._sinks.failed(app, outcome.error)
            failures += 1
            reason = failure_reason(error)
            if isinstance(error, PermanentWriteError):
                yield self._sinks.dead_letter(app, batch, reason)
                continue
            due = next_attempt(policy, failures, first_s, now, error)
            if due is None:
                # the application's next batches wait a backoff too, not one timeout each
                self._circuit.open(app, now + policy.backoff_s(1), reason)
                yield self._sinks.dead_letter(app, batch, f"gave up after {failures} attempts: {reason}")
                continue
            self._circuit.open(app, due, reason)
            self._sinks.retrying(app, failures, due - now, error)
            key.hold(batch, failures, first_s, reason)
            retry.set(Timestamp(due))

    def _attempt(self, batch: Batch, failures: int, now: float) -> Outcome | _Wait:
        """The batch's write, on its application's thread (`WorkerWrites`): its outcome if
        it ended (now, or since the key last asked), else when the key should ask again;
        a `_Wait` with a reason when the application's circuit holds the batch."""
        app, writes = batch.application_id, self._sinks.writes
        if writes.started(app, batch.batch_id):
            outcome = writes.outcome(app, batch.batch_id)
            return outcome if outcome is not None else _Wait(now + POLL_S, None)
        opening = self._circuit.opening(app, now)
        if opening is not None:       # another batch of the application failed: wait with it
            return _Wait(opening.until, opening.reason)
        if writes.busy(app):          # another batch of the application is being written
            return _Wait(now + POLL_S, None)
        outcome = writes.attempt(batch, RETRY_INLINE_S if failures else FIRST_INLINE_S)
        return outcome if outcome is not None else _Wait(now + POLL_S, None)

    def teardown(self) -> None:
        self._sinks.close()
