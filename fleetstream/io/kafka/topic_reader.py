"""Read a Kafka topic once, from its first record to its end at the time of the call.

    for value in read_topic("127.0.0.1:9092", "dead-letters"):
        ...

For tools that look at what a topic holds now (`fleetstream dead-letters
list|resend --input kafka://HOST:PORT/dead-letters`), not for the streaming
job: no consumer group is joined and no offset is committed, so reading
changes nothing for anyone else.
"""
from __future__ import annotations

from typing import Iterator, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from fleetstream.io.kafka.errors import retried

KAFKA_SCHEME = "kafka://"


class TopicReadError(ValueError):
    """The broker or the topic cannot be read; the message says which and why."""


def parse_topic_url(url: str) -> tuple[str, str]:
    """`kafka://HOST:PORT/TOPIC` -> (bootstrap servers, topic); ValueError otherwise."""
    bootstrap, _, topic = url.removeprefix(KAFKA_SCHEME).partition("/")
    if not url.startswith(KAFKA_SCHEME) or not bootstrap or not topic:
        raise ValueError(f"expected kafka://HOST:PORT/TOPIC, got {url!r}")
    return bootstrap, topic


def group_consumer_config(bootstrap: str, group: str) -> dict[str, object]:
    """A consumer of `group` that reads the partitions it is assigned and commits only when
    told; an assigned offset that no longer exists (records past retention) reads from the
    earliest one left, not from the end."""
    return {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}


def topic_partitions(client: Consumer, bootstrap: str, topic: str,
                     timeout_s: float = 10.0) -> list[int]:
    """The partition numbers of `topic`; TopicReadError when the broker or topic is not there."""
    try:
        metadata = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as error:
        raise TopicReadError(f"cannot reach Kafka at {bootstrap}: {error}") from None
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise TopicReadError(f"topic {topic!r} does not exist on {bootstrap}")
    return sorted(metadata.partitions)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 10.0) -> Iterator[bytes]:
    """Every record value of `topic`, partition by partition, up to each partition's end
    when the call began. Raises TopicReadError when the broker or the topic is not there."""
    for record in read_records(bootstrap, topic, timeout_s=timeout_s):
        if record.value() is not None:
            yield record.value()


def read_records(bootstrap: str, topic: str, start: Mapping[int, int] | None = None,
                 timeout_s: float = 10.0) -> Iterator[Message]:
    """Every record of `topic` (tombstones too), partition by partition, from `start`
    (partition -> offset; else the first) up to each partition's end when it is reached."""
    consumer = Consumer({**group_consumer_config(bootstrap, "fleetstream-reader"),
                         "enable.partition.eof": True})
    try:
        for partition in topic_partitions(consumer, bootstrap, topic, timeout_s):
            low, high = watermarks(consumer, TopicPartition(topic, partition), timeout_s)
            first = max(low, (start or {}).get(partition, low))
            if high <= first:
                continue
            consumer.assign([TopicPartition(topic, partition, first)])
            yield from _records_until(consumer, high, timeout_s)
    finally:
        consumer.close()


def watermarks(consumer: Consumer, partition: TopicPartition, timeout_s: float
               ) -> tuple[int, int]:
    """The partition's (low, high) offsets, waiting out transient errors (a topic created a
    moment ago has no leader yet) for up to `timeout_s`."""
    return retried(lambda: consumer.get_watermark_offsets(partition, timeout=timeout_s),
                   timeout_s)


def _records_until(consumer: Consumer, end: int, timeout_s: float) -> Iterator[Message]:
    """Records of the assigned partition up to (not including) offset `end`."""
    while True:
        message = consumer.poll(timeout_s)
        if message is None:
            raise TopicReadError(f"no record within {timeout_s} s before offset {end}")
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                return
            raise TopicReadError(str(message.error()))
        yield message
        if message.offset() + 1 >= end:
            return
