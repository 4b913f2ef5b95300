"""Move a consumer group's committed offsets to the start, the end, or a point in time.

    reset_group_offsets("127.0.0.1:9092", "fleetstream", ["raw.tesla", "raw.bmw"], "earliest")

What `kafka-consumer-groups.sh --reset-offsets --to-earliest|--to-latest|--to-datetime`
does, for the streaming job's raw topics before it is submitted: the job then
reads from the group's committed offsets. For a time, each partition starts at
its first record whose timestamp is at or after it, or at its end when it has
none (KafkaIO's own `start_read_time` fails the job instead). The group must
have no active members (the streaming job reads with assigned partitions, so a
stopped job leaves none).
"""
from __future__ import annotations

from typing import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from fleetstream.io.kafka.topic_reader import (TopicReadError, group_consumer_config,
                                               topic_partitions)


def reset_group_offsets(bootstrap: str, group: str, topics: Iterable[str],
                        start: str | int, timeout_s: float = 10.0) -> dict[tuple[str, int], int]:
    """Commit, for every partition of `topics`, the offset `start` names; those offsets.

    `start` is "earliest", "latest" or an epoch-ms time. Raises TopicReadError
    when the broker or a topic cannot be read.
    """
    consumer = Consumer(group_consumer_config(bootstrap, group))
    try:
        partitions = [TopicPartition(topic, partition) for topic in sorted(set(topics))
                      for partition in topic_partitions(consumer, bootstrap, topic, timeout_s)]
        ends = {(p.topic, p.partition): consumer.get_watermark_offsets(p, timeout=timeout_s)
                for p in partitions}
        if isinstance(start, int):
            found = consumer.offsets_for_times(
                [TopicPartition(p.topic, p.partition, start) for p in partitions],
                timeout=timeout_s)
            offsets = {(p.topic, p.partition): p.offset if p.offset >= 0
                       else ends[p.topic, p.partition][1] for p in found}
        else:
            side = 0 if start == "earliest" else 1
            offsets = {key: bounds[side] for key, bounds in ends.items()}
        consumer.commit(offsets=[TopicPartition(topic, partition, offset)
                                 for (topic, partition), offset in offsets.items()],
                        asynchronous=False)
        return offsets
    except KafkaException as error:
        raise TopicReadError(f"cannot reset the offsets of group {group!r} on {bootstrap}: "
                             f"{error}") from None
    finally:
        consumer.close()

