"""How often a Kafka consumer stops fetching after a broker restart, with and without the
Python reader's stall watch (confluentinc/librdkafka#5153).

    python benchmarks/broker_restart_stalls.py [--rounds 6] [--reader plain|pool]

Each round creates a 16-partition topic with one record per partition, gives each
partition a consumer with `assign()` (as `ReadKafkaPartitions` does), polls them all every
50 ms, restarts the local broker (stop, 5 s, start), produces 5 more records per partition
and, 30 s later, lists the partitions whose consumer has not read all 6. `plain` polls
librdkafka consumers directly; `pool` goes through the reader's `_ConsumerPool`, which
replaces a consumer that fetched nothing for 5 s while the broker held records. Restarts
the broker the local services run (`fleetstream dev up kafka` or not running).
"""
from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from fleetstream.dev.kafka import Kafka
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.partition_reader import _ConsumerPool
from fleetstream.io.kafka.topic_reader import group_consumer_config

PARTITIONS = 16
AFTER_RESTART = 5


class PlainConsumers:
    """One librdkafka consumer per partition, assigned once."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumers = []
        for partition in range(PARTITIONS):
            consumer = Consumer(group_consumer_config(bootstrap, f"g-{topic}"))
            consumer.assign([TopicPartition(topic, partition, 0)])
            self._consumers.append(consumer)

    def poll(self, partition: int, position: int) -> int:
        """The position after one poll of `partition`."""
        records = [r for r in self._consumers[partition].consume(1000, timeout=0)
                   if r.error() is None]
        return records[-1].offset() + 1 if records else position


class PooledConsumers:
    """The Python reader's consumers: taken from and given back to its pool per poll."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._pool = _ConsumerPool(bootstrap, f"g-{topic}")

    def poll(self, partition: int, position: int) -> int:
        consumer = self._pool.take((self._topic, partition), position)
        records = [r for r in consumer.consume(1000, timeout=0) if r.error() is None]
        after = records[-1].offset() + 1 if records else position
        self._pool.give_back((self._topic, partition), consumer, after, fetched=bool(records))
        return after


def one_round(kafka: Kafka, reader: type) -> list[int]:
    """The partitions that did not read every record within 30 s of the restart."""
    topic = f"restart-{uuid.uuid4().hex[:6]}"
    create_topics(kafka.bootstrap, [Topic(topic, PARTITIONS)])
    produce(kafka.bootstrap, topic, 1)
    consumers = reader(kafka.bootstrap, topic)
    positions = [0] * PARTITIONS
    done = threading.Event()

    def poll_all() -> None:
        while not done.is_set():
            for partition in range(PARTITIONS):
                positions[partition] = consumers.poll(partition, positions[partition])
            time.sleep(0.05)

    poller = threading.Thread(target=poll_all)
    poller.start()
    time.sleep(3)
    kafka.stop()
    time.sleep(5)
    start(kafka)
    produce(kafka.bootstrap, topic, AFTER_RESTART)
    time.sleep(30)
    done.set()
    poller.join()
    return [p for p, position in enumerate(positions) if position < 1 + AFTER_RESTART]


def produce(bootstrap: str, topic: str, per_partition: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition in range(PARTITIONS):
        for _ in range(per_partition):
            producer.produce(topic, b"x", partition=partition)
    if producer.flush(30):
        raise SystemExit(f"could not produce to {topic}")


def start(kafka: Kafka) -> None:
    if kafka.pid() is None:
        kafka.start()
    deadline = time.monotonic() + 120
    while not kafka.ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"Kafka did not start:\n{kafka.log_tail()}")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reader", choices=("plain", "pool"), default="pool")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    kafka = Kafka()
    start(kafka)
    stalled = 0
    for number in range(1, args.rounds + 1):
        short = one_round(kafka, PlainConsumers if args.reader == "plain" else PooledConsumers)
        stalled += len(short)
        print(f"round {number}/{args.rounds}: partitions short of their records 30 s after "
              f"the restart: {short or 'none'}", flush=True)
    print(f"{args.reader}: {stalled} of {args.rounds * PARTITIONS} partitions stalled")


if __name__ == "__main__":
    main()
