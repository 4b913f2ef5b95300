"""How far a consumer group is behind its topics, from Kafka itself (DATA-CONTRACTS §9).

Per topic: records between the group's committed offset and the newest offset of
each partition, and how old the oldest of them is (now minus the record timestamp
at the committed offset). The streaming job commits its raw-topic offsets at each
completed checkpoint, so the figures trail by at most one checkpoint interval.
Reads only: nothing joins the group and nothing is committed.
"""
from __future__ import annotations

import time
from typing import Iterable, NamedTuple

from confluent_kafka import Consumer, TopicPartition

from fleetstream.io.kafka.topic_reader import group_consumer_config, topic_partitions, watermarks


class TopicLag(NamedTuple):
    """One topic's lag: records behind and the age of the oldest unread one."""

    records: int
    seconds: float


def consumer_lag(bootstrap: str, group: str, topics: Iterable[str],
                 timeout_s: float = 5.0) -> dict[str, TopicLag]:
    """The group's lag per topic; a partition the group never committed counts from its
    first record. Raises TopicReadError when the broker or a topic is not there."""
    consumer = Consumer({**group_consumer_config(bootstrap, group), "enable.partition.eof": True})
    try:
        lags: dict[str, TopicLag] = {}
        for topic in sorted(set(topics)):
            partitions = [TopicPartition(topic, p)
                          for p in topic_partitions(consumer, bootstrap, topic, timeout_s)]
            committed = consumer.committed(partitions, timeout=timeout_s)
            records, oldest_ms = 0, None
            for partition in committed:
                low, high = watermarks(consumer, TopicPartition(topic, partition.partition),
                                       timeout_s)
                position = max(low, partition.offset) if partition.offset >= 0 else low
                if high <= position:
                    continue
                records += high - position
                stamp = _timestamp_at(consumer, topic, partition.partition, position, timeout_s)
                if stamp is not None:
                    oldest_ms = stamp if oldest_ms is None else min(oldest_ms, stamp)
            seconds = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
            lags[topic] = TopicLag(records, seconds)
        return lags
    finally:
        consumer.close()


def _timestamp_at(consumer: Consumer, topic: str, partition: int, offset: int,
                  timeout_s: float) -> int | None:
    """The epoch-ms timestamp of the record at `offset`, or None if none arrives in time."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    message = consumer.poll(timeout_s)
    consumer.unassign()
    if message is None or message.error() is not None:
        return None
    return message.timestamp()[1]
