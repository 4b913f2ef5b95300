"""Deliver in a streaming job: one keyed step per application and delivery shard batches
in state, writes on the application's thread (`delivery_writes`), and holds what failed
or is still in flight for its retry timer (see deliver.py's docstring for the rules)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.utils.timestamp import Timestamp

from fleetstream.schemas.delivery import Batch, Batching, Record
from fleetstream.schemas.errors import PermanentWriteError
from fleetstream.transforms.coders import decode_records, encode_records
from fleetstream.transforms.delivery_batches import batch_id, cut_batches, record_size
from fleetstream.transforms.delivery_retry import (Circuit, failure_reason, next_attempt,
                                                   worker_circuit)
from fleetstream.transforms.delivery_sinks import DeliverySinks
from fleetstream.transforms.delivery_writes import (FIRST_INLINE_S, POLL_S, RETRY_INLINE_S,
                                                    Outcome)

#: at the end of the window, how long a held batch's attempt in flight is waited for
END_WAIT_S = 30.0


class _Wait(NamedTuple):
    """A batch not written yet: ask again at `until`; `reason` when its application's sink
    failed (the circuit holds it), None while a write is in flight."""

    until: float
    reason: str | None


#: ((application_id, delivery shard), the shard's (application_id, Record) pairs in one
#: bundle, in order)
ShardedLists = tuple[tuple[str, int], list[tuple[str, Record]]]


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


class BatchAndWriteFn(beam.DoFn):
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

    def __init__(self, batching: Mapping[str, Batching], sinks: DeliverySinks,
                 clock: Callable[[], float]) -> None:
        self._batching = dict(batching)
        self._sinks = sinks
        self._clock = clock

    def setup(self) -> None:
        self._sinks.open()
        self._circuit: Circuit = worker_circuit(self._sinks.name)

    def process(self, element: ShardedLists,
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
