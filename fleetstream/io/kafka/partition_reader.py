"""Read Kafka topics in the Python workers: one unbounded splittable DoFn per partition.

    batches = pipeline | ReadKafkaPartitions("127.0.0.1:9092", ["raw.tesla", "raw.bmw"], "fleetstream")
    # -> lists of (topic, record timestamp ms, value bytes), one list per poll

KafkaIO (Java) hands every record to the Python workers one by one, as a
Beam row: on this machine that hand-over alone capped a read at ~15k records/s
(this reader: ~86k/s) and costs the TaskManager about 0.1 ms per record
(docs/benchmarks.md, fourth series).
Here each partition is a restriction (an offset range open at the end) that a
Python consumer reads in polls of up to `max_records`; a poll's records go
downstream as one element, so the runner's per-element work is paid per poll.
A partition that is caught up is polled again after `poll_interval_s` (50 ms: up to
that much latency), one that is behind at once: resuming a partition costs a runner
timer, state and a call into Python, which, paid for every record or two at a few
thousand messages/s, was most of the job's capacity.

* **Positions** are the restriction: Flink keeps it in its checkpoints, so a
  job restored from a checkpoint or savepoint resumes at the next unread offset
  of every partition. A fresh job starts at the consumer group's committed
  offset, else at `start` (earliest or latest); asking for it waits out a broker
  that is restarting or has just started (RESTRICTION_TIMEOUT_S).
* **Offsets are committed** to the consumer group when Flink completes the
  checkpoint that follows a poll (bundle finalisation, at most every 2 s per
  worker process: see `_ConsumerPool`), so the group's offsets show the job's
  progress and a fresh job resumes near where the last stopped.
* **Timestamps** are the read time, and the watermark is the wall clock (a
  record-time watermark would stall on a partition with no data).
* The partitions are listed when the pipeline is built: a partition added
  later is read after the job is restarted.
* **A consumer that stops fetching is replaced.** After a broker restart an
  assigned librdkafka consumer can stop fetching a partition for good
  (confluentinc/librdkafka#5153; seen here once in a few runs of
  tests/test_stream_flink.py, one partition 15 records short for minutes). A
  partition whose polls return nothing at one offset for `stall_s` while the
  broker held records past it is read by a new consumer; if that one does not
  get past the offset either (made while the broker was still coming back, it
  can be stuck too), by another after twice as long, and so on up to every
  `MAX_STALL_S`.

On Beam 2.62's Flink runner each self-checkpoint of such a reader leaked keyed
state until the TaskManager ran out of memory; the local job server runs with
the fix (`fleetstream.runtime.beam_patch`), which a production job server needs too.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import WalltimeWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from fleetstream.io.kafka.errors import retried
from fleetstream.io.kafka.topic_reader import group_consumer_config, topic_partitions, watermarks

#: (topic, record timestamp in epoch ms, value)
KafkaRecord = tuple[str, int, bytes]
#: a restriction's end: partitions are read for ever
_NO_END = sys.maxsize
#: the longest quiet after which an offset is called stalled again (see `_StallWatch`)
MAX_STALL_S = 120.0
#: how long a partition's first offset is asked for through transient broker errors
RESTRICTION_TIMEOUT_S = 60.0


class ReadKafkaPartitions(beam.PTransform):
    """PBegin -> lists of KafkaRecord: every partition of `topics`, read by Python consumers."""

    def __init__(self, bootstrap: str, topics: Sequence[str], group: str,
                 start: str = "earliest", commit_offsets: bool = True,
                 max_records: int = 1000, max_read_s: float = 0.1,
                 poll_interval_s: float = 0.05) -> None:
        super().__init__()
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be earliest or latest, got {start!r}")
        self._bootstrap = bootstrap
        self._group = group
        self._topics = sorted(topics)
        self._read = _ReadPartitionFn(bootstrap, group, start, commit_offsets, max_records,
                                      max_read_s, poll_interval_s)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (begin
                | "Partitions" >> beam.Create(self._partitions())
                | "ReadPartitions" >> beam.ParDo(self._read))

    def _partitions(self) -> list[tuple[str, int]]:
        consumer = Consumer(group_consumer_config(self._bootstrap, self._group))
        try:
            return [(topic, partition) for topic in self._topics
                    for partition in topic_partitions(consumer, self._bootstrap, topic)]
        finally:
            consumer.close()


class _PartitionOffsets(RestrictionProvider):
    """A partition's restriction: [the offset to read next, no end)."""

    def __init__(self, bootstrap: str, group: str, start: str) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._start = start

    def initial_restriction(self, partition: tuple[str, int]) -> OffsetRange:
        """From the group's committed offset, else from `start`. Transient broker errors
        (a broker restarting or just started: no group coordinator yet, no metadata for the
        partition yet) are waited out for up to RESTRICTION_TIMEOUT_S: raised, they failed
        the bundle and restarted the whole job."""
        consumer = Consumer(group_consumer_config(self._bootstrap, self._group))
        try:
            where = TopicPartition(*partition)
            committed = retried(lambda: consumer.committed([where], timeout=10)[0].offset,
                                RESTRICTION_TIMEOUT_S)
            if committed == OFFSET_INVALID:
                low, high = watermarks(consumer, where, RESTRICTION_TIMEOUT_S)
                committed = low if self._start == "earliest" else high
        finally:
            consumer.close()
        return OffsetRange(committed, _NO_END)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, partition: tuple[str, int], restriction: OffsetRange) -> float:
        return 1.0      # unknown backlog; one restriction per partition, never split

    def split(self, partition: tuple[str, int],
              restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction

    def truncate(self, partition: tuple[str, int], restriction: OffsetRange) -> None:
        return None     # a drained job stops reading


class _ReadPartitionFn(beam.DoFn, _PartitionOffsets):
    """Poll one partition until it is caught up or `max_read_s` passed, then hand back."""

    def __init__(self, bootstrap: str, group: str, start: str, commit_offsets: bool,
                 max_records: int, max_read_s: float, poll_interval_s: float,
                 commit_every_s: float = 2.0) -> None:
        _PartitionOffsets.__init__(self, bootstrap, group, start)
        self._commit_offsets = commit_offsets
        self._max_records = max_records
        self._max_read_s = max_read_s
        self._poll_interval_s = poll_interval_s
        #: this reader's (so this job's) pool in each worker process: a worker process that
        #: serves a later job must not commit positions the earlier one handed on
        self._pool_key = uuid.uuid4().hex
        self._commit_every_s = commit_every_s

    def setup(self) -> None:
        self._pool = _POOLS.setdefault(self._pool_key, _ConsumerPool(self._bootstrap,
                                                                      self._group))

    @beam.DoFn.unbounded_per_element()
    def process(self, partition: tuple[str, int],
                # before the tracker: Beam passes a finalizer by position, a tracker by name
                finalizer=beam.DoFn.BundleFinalizerParam,
                tracker: OffsetRestrictionTracker = beam.DoFn.RestrictionParam(),
                _watermark=beam.DoFn.WatermarkEstimatorParam(
                    WalltimeWatermarkEstimator.default_provider())
                ) -> Iterable[TimestampedValue]:
        start = position = tracker.current_restriction().start
        consumer = self._pool.take(partition, position)
        deadline = time.monotonic() + self._max_read_s
        finished = caught_up = False
        try:
            while True:
                # what the consumer has fetched already (it fetches in the background)
                records = [record for record in consumer.consume(self._max_records, timeout=0)
                           if record.error() is None]
                if records and not tracker.try_claim(records[-1].offset()):
                    return      # the restriction was truncated (drain)
                if records:
                    position = records[-1].offset() + 1
                    yield TimestampedValue(
                        [(record.topic(), record.timestamp()[1], record.value() or b"")
                         for record in records], Timestamp.now())
                if len(records) < self._max_records or time.monotonic() > deadline:
                    finished, caught_up = True, len(records) < self._max_records
                    break
        finally:
            # a poll cut short leaves the consumer's position unknown: seek again next time
            self._pool.give_back(partition, consumer, position if finished else -1,
                                 fetched=position != start)
        if self._commit_offsets:
            self._pool.commit_after_checkpoint(finalizer, self._commit_every_s)
        # behind: read on at once; caught up: come back after `poll_interval_s`, so that a
        # partition is not resumed (a runner timer, state and a call into Python) for each
        # record or two
        tracker.defer_remainder(Duration.of(self._poll_interval_s) if caught_up else Duration(0))


class _ConsumerPool:
    """A worker process's consumers, one per partition, and the positions they handed on.

    Shared by every instance of one job's reader in the process: the SDK worker keeps a
    bundle's DoFn instances aside until the checkpoint after it completes when the bundle
    registered a finalisation callback, so per-instance consumers would multiply. For the
    same reason offsets are committed through at most one callback per `every_s`, which
    commits the positions handed on when it was registered. Flink runs it once a checkpoint
    completes; Beam's runner then finalises every bundle finished by that moment, so a
    commit can be ahead of the last completed checkpoint by what was read since its barrier
    (a restore from the checkpoint is exact; a fresh start from the group's offsets may skip
    that).
    """

    def __init__(self, bootstrap: str, group: str, stall_s: float = 5.0) -> None:
        # fetch.wait.max.ms stays librdkafka's 500 ms: the broker answers a fetch as soon as
        # a record arrives, so a shorter wait only adds empty fetches (at 10 ms, ~1,600 a second
        # over 16 idle partitions, in the broker and in the workers' consumer threads)
        self._config = {**group_consumer_config(bootstrap, group),
                        "queued.max.messages.kbytes": 8192}
        self._lock = threading.Lock()
        #: partition -> (idle consumer, the offset its next poll returns, or -1)
        self._idle: dict[tuple[str, int], tuple[Consumer, int]] = {}
        #: partition -> offset after the last record handed on (what a commit would store)
        self._handed_on: dict[tuple[str, int], int] = {}
        self._committer: Consumer | None = None
        self._last_commit_at = 0.0
        self._stalls = _StallWatch(stall_s)
        self._prober: Consumer | None = None

    def take(self, partition: tuple[str, int], position: int) -> Consumer:
        with self._lock:
            consumer, next_offset = self._idle.pop(partition, (None, -1))
        if consumer is None:
            consumer = Consumer(self._config)
        if next_offset != position:
            consumer.assign([TopicPartition(*partition, position)])
        return consumer

    def give_back(self, partition: tuple[str, int], consumer: Consumer, position: int,
                  fetched: bool = True) -> None:
        """Keep `consumer` for the partition's next poll at `position` (-1: unknown); one
        whose polls have `fetched` nothing while records wait is closed instead."""
        if position >= 0 and not fetched and self._stalls.stalled(
                partition, position, time.monotonic(), lambda: self._end_offset(partition)):
            _log.warning("%s[%d]: no record fetched at offset %d for %.0f s although the "
                         "broker holds more; reading on with a new consumer "
                         "(confluentinc/librdkafka#5153)", *partition, position,
                         self._stalls.after_s)
            consumer.close()
            return
        with self._lock:
            self._idle[partition] = (consumer, position)
            if position >= 0:
                self._handed_on[partition] = position

    def _end_offset(self, partition: tuple[str, int]) -> int | None:
        """The partition's end offset asked of the broker (by a consumer of its own, not
        the one that may be stuck); None if the broker does not answer."""
        with self._lock:
            prober = self._prober = self._prober or Consumer(self._config)
        try:
            return prober.get_watermark_offsets(TopicPartition(*partition), timeout=2)[1]
        except (KafkaException, RuntimeError):
            # KafkaException: made while the broker was away, so ask with a new one next time.
            # RuntimeError ("Consumer closed"): another thread did that meanwhile; seen
            # escaping the bundle 118 times while the shared broker restarted (2026-12-07).
            with self._lock:
                ours = self._prober is prober
                if ours:
                    self._prober = None
            if ours:
                prober.close()
            return None

    def commit_after_checkpoint(self, finalizer: Any, every_s: float) -> None:
        with self._lock:
            if time.monotonic() - self._last_commit_at < every_s or not self._handed_on:
                return
            self._last_commit_at = time.monotonic()
            offsets = [TopicPartition(*partition, offset)
                       for partition, offset in self._handed_on.items()]
            committer = self._committer = self._committer or Consumer(self._config)
        finalizer.register(lambda: _commit(committer, offsets))


def _commit(committer: Consumer, offsets: list[TopicPartition]) -> None:
    committer.poll(0)       # serve the results of earlier commits (else they pile up)
    committer.commit(offsets=offsets, asynchronous=True)


# TODO(https://github.com/confluentinc/librdkafka/issues/5153): remove `_StallWatch` and the
# consumer replacement once confluent-kafka ships a librdkafka whose consumers resume
# fetching after a broker restart (benchmarks/broker_restart_stalls.py reproduces it).
class _StallWatch:
    """Tells a consumer that has stopped fetching from one that is caught up: its polls
    returned nothing at one offset for `after_s` although, `after_s` ago, the broker held
    records past that offset. Asks the broker at most once per `after_s` per partition.

    Each time an offset is called stalled again, the quiet it takes doubles, up to
    `max_after_s`: a consumer made to replace a stuck one while the broker was still
    coming back can be stuck as well, while what lies past an offset that no new consumer
    gets beyond is no record (a transaction marker, say) and costs a consumer per
    `max_after_s` only.
    """

    def __init__(self, after_s: float, max_after_s: float = MAX_STALL_S) -> None:
        self.after_s = after_s
        self.max_after_s = max_after_s
        #: partition -> (offset polled at, since when, the partition's end offset then)
        self._quiet: dict[tuple[str, int], tuple[int, float, int | None]] = {}
        #: partition -> (the offset last called stalled, how many times in a row)
        self._called: dict[tuple[str, int], tuple[int, int]] = {}

    def stalled(self, partition: tuple[str, int], position: int, now: float,
                end_offset: Callable[[], int | None]) -> bool:
        """After a poll at `position` that returned nothing."""
        offset, since, end = self._quiet.get(partition, (-1, now, None))
        if offset != position:
            self._quiet[partition] = (position, now, None)
            return False
        called_at, times = self._called.get(partition, (-1, 0))
        quiet_s = min(self.after_s * 2 ** (times if called_at == position else 0),
                      max(self.max_after_s, self.after_s))
        if now - since < quiet_s:
            return False
        if end is not None and end > position:
            del self._quiet[partition]
            self._called[partition] = (position, times + 1 if called_at == position else 1)
            return True
        self._quiet[partition] = (position, now, end_offset())
        return False


_log = logging.getLogger(__name__)
#: reader (job) -> its consumers in this worker process
_POOLS: dict[str, _ConsumerPool] = {}
