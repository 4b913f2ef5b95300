"""ReadKafkaPartitions' parts that need no runner, against the real local broker.

Where each partition starts (committed offset, else earliest or latest) and which offsets
the commit callback stores. The whole reader runs on Flink in tests/test_stream_flink.py
and tests/test_kafka_offsets_flink.py (`kafka.raw_reader: python`).
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from fleetstream.dev.kafka import Kafka
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.errors import retried
from fleetstream.io.kafka.partition_reader import (ReadKafkaPartitions, _ConsumerPool,
                                                   _PartitionOffsets, _StallWatch)

pytest_plugins = ["fleetstream.dev.pytest_plugin"]


@pytest.fixture
def topic(kafka_service: Kafka) -> str:
    """A fresh 2-partition topic with 5 records in partition 0 and 3 in partition 1."""
    name = f"reader-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(name, 2)])
    producer = Producer({"bootstrap.servers": kafka_service.bootstrap})
    for partition, count in ((0, 5), (1, 3)):
        for i in range(count):
            producer.produce(name, value=f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(10) == 0
    return name


class _Finalizer:
    def __init__(self) -> None:
        self.callbacks: list = []

    def register(self, callback) -> None:
        self.callbacks.append(callback)


def _committed(bootstrap: str, group: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)],
                                   timeout=10)
        return [tp.offset for tp in found]
    finally:
        consumer.close()


def test_a_partition_starts_at_the_committed_offset_else_where_start_says(
        kafka_service: Kafka, topic: str) -> None:
    bootstrap, group = kafka_service.bootstrap, f"g-{uuid.uuid4().hex[:6]}"
    earliest = _PartitionOffsets(bootstrap, group, "earliest")
    latest = _PartitionOffsets(bootstrap, group, "latest")
    assert earliest.initial_restriction((topic, 0)).start == 0
    assert latest.initial_restriction((topic, 0)).start == 5
    assert latest.initial_restriction((topic, 1)).start == 3
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()
    assert earliest.initial_restriction((topic, 0)).start == 2
    assert latest.initial_restriction((topic, 0)).start == 2
    assert earliest.initial_restriction((topic, 0)).stop > 10 ** 18    # read for ever


def test_a_partition_start_asked_while_the_broker_is_away_waits_for_it(
        private_kafka: Kafka) -> None:
    """A job starting while its broker restarts: the start offset is asked again until the
    broker answers, not raised out of the bundle (that restarted the whole job)."""
    bootstrap, group, name = private_kafka.bootstrap, "g-late", "reader-late"
    create_topics(bootstrap, [Topic(name, 1)])
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    # a broker just started has no group coordinator yet: NOT_COORDINATOR, seen once
    retried(lambda: committer.commit(offsets=[TopicPartition(name, 0, 2)], asynchronous=False),
            30.0)
    committer.close()
    private_kafka.stop()
    found: list = []
    asking = threading.Thread(target=lambda: found.append(
        _PartitionOffsets(bootstrap, group, "earliest").initial_restriction((name, 0)).start))
    asking.start()
    time.sleep(12)                   # longer than one `committed` call waits (10 s)
    assert asking.is_alive()
    private_kafka.start()
    asking.join(timeout=90)
    assert found == [2]


def test_the_commit_callback_stores_what_was_handed_on_before_it_at_most_every_interval(
        kafka_service: Kafka, topic: str) -> None:
    bootstrap, group = kafka_service.bootstrap, f"g-{uuid.uuid4().hex[:6]}"
    pool = _ConsumerPool(bootstrap, group)
    consumer = pool.take((topic, 0), 1)
    records = consumer.consume(10, timeout=10)
    assert [r.value() for r in records][:1] == [b"0-1"]            # assigned at offset 1
    pool.give_back((topic, 0), consumer, 5)
    assert pool.take((topic, 0), 5) is consumer                    # kept, no seek needed
    pool.give_back((topic, 0), consumer, 5)
    finalizer = _Finalizer()
    pool.commit_after_checkpoint(finalizer, every_s=60)
    pool.give_back((topic, 1), pool.take((topic, 1), 0), 3)       # after the callback
    pool.commit_after_checkpoint(finalizer, every_s=60)            # too soon: no second one
    assert len(finalizer.callbacks) == 1
    assert _committed(bootstrap, group, topic) == [-1001, -1001]   # nothing before the checkpoint
    finalizer.callbacks[0]()
    committer = pool._committer
    committer.poll(5)                                              # serve the async commit
    committed = _committed(bootstrap, group, topic)
    assert committed == [5, -1001], committed                      # partition 1 came later


def test_a_position_past_retention_reads_on_from_the_earliest_record_left(
        kafka_service: Kafka, topic: str) -> None:
    """Records deleted by retention under a restored position are skipped, not the rest."""
    from confluent_kafka.admin import AdminClient

    bootstrap = kafka_service.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [done] = admin.delete_records([TopicPartition(topic, 0, 3)]).values()
    assert done.result(timeout=10).low_watermark == 3              # 0-0 .. 0-2 are gone
    consumer = _ConsumerPool(bootstrap, f"g-{uuid.uuid4().hex[:6]}").take((topic, 0), 1)
    values = [r.value() for r in consumer.consume(10, timeout=10) if r.error() is None]
    consumer.close()
    assert values == [b"0-3", b"0-4"]


def test_unknown_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start must be earliest or latest"):
        ReadKafkaPartitions("127.0.0.1:9092", ["t"], "g", start="yesterday")


def test_a_consumer_that_stops_fetching_is_replaced_and_an_idle_one_kept(
        kafka_service: Kafka, topic: str) -> None:
    """librdkafka#5153: after a broker restart an assigned consumer can stop fetching a
    partition for good (seen here: the Python reader stuck 15 records short after
    test_stream_flink's broker restart). Pausing the consumer stands in for that."""
    bootstrap = kafka_service.bootstrap
    pool = _ConsumerPool(bootstrap, f"g-{uuid.uuid4().hex[:6]}", stall_s=0.5)
    stuck, idle = pool.take((topic, 0), 5), pool.take((topic, 1), 3)   # both caught up
    stuck.pause([TopicPartition(topic, 0)])
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in (5, 6):
        producer.produce(topic, value=f"0-{i}".encode(), partition=0)
    assert producer.flush(10) == 0
    for _ in range(15):                         # 3 s of polls that return nothing
        assert not stuck.consume(10, timeout=0.1) and not idle.consume(10, timeout=0.1)
        pool.give_back((topic, 0), stuck, 5, fetched=False)
        pool.give_back((topic, 1), idle, 3, fetched=False)
        current = pool.take((topic, 0), 5)
        assert pool.take((topic, 1), 3) is idle       # nothing to fetch: kept
        if current is not stuck:
            break
        time.sleep(0.1)
    assert current is not stuck                       # records waiting, none fetched: replaced
    values = [r.value() for r in current.consume(10, timeout=10) if r.error() is None]
    assert values == [b"0-5", b"0-6"]


def test_an_offset_is_called_stalled_again_after_ever_longer_quiet_and_only_when_records_waited_past_it(
        ) -> None:
    watch, part = _StallWatch(after_s=5), ("t", 0)
    asked: list[float] = []

    def polls(position: int, end: int | None, start: float, seconds: int) -> list[float]:
        """When, polling every second from `start`, `position` was called stalled."""
        def end_offset() -> int | None:
            asked.append(start)
            return end
        return [start + s for s in range(seconds)
                if watch.stalled(part, position, start + s, end_offset)]

    assert polls(7, 7, 0, 30) == []                  # caught up: never
    assert len(asked) == 5                           # the broker asked every 5 s, not per poll
    # a record waited from 105 to 110; the new consumers got no further: each is called
    # stalled after twice the quiet of the one before (asked at half), up to 120 s
    assert polls(8, 9, 100, 600) == [110, 131, 172, 253, 414, 655]
    assert polls(9, None, 1000, 30) == []            # the broker does not answer
    assert polls(9, 12, 1100, 20) == [1105]          # answers again: waited from 1100 to 1105


def test_a_prober_closed_under_another_thread_is_no_answer_then_replaced(
        kafka_service: Kafka, topic: str) -> None:
    """While the broker restarted, one thread's prober was replaced and closed by another
    between taking and using it: "RuntimeError: Consumer closed" escaped the bundle."""
    pool = _ConsumerPool(kafka_service.bootstrap, f"g-{uuid.uuid4().hex[:6]}")
    end = pool._end_offset((topic, 0))
    assert end is not None and end > 0
    pool._prober.close()                       # what the other thread did
    assert pool._end_offset((topic, 0)) is None
    assert pool._end_offset((topic, 0)) == end     # asked with a new prober
