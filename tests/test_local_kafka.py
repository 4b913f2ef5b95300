"""The local Kafka: topics are created and keyed records make the round trip."""
from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fleetstream.local.kafka import Kafka
from fleetstream.local.topics import FLEETSTREAM_TOPICS, Topic, create_topics

pytest_plugins = ["fleetstream.local.pytest_plugin"]


def test_fleetstream_topics_exist_with_their_partitions(kafka_service: Kafka) -> None:
    create_topics(kafka_service.bootstrap)
    assert create_topics(kafka_service.bootstrap) == []  # idempotent
    topics = AdminClient({"bootstrap.servers": kafka_service.bootstrap}).list_topics(
        timeout=10).topics
    for topic in FLEETSTREAM_TOPICS:
        assert len(topics[topic.name].partitions) == topic.partitions


def test_keyed_records_round_trip(kafka_service: Kafka) -> None:
    topic = f"test.round-trip.{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic, partitions=4)])
    sent = {f"vin-{i}".encode(): f'{{"speed": {i}}}'.encode() for i in range(20)}
    producer = Producer({"bootstrap.servers": kafka_service.bootstrap})
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": kafka_service.bootstrap,
                         "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    try:
        for _ in range(60):
            for message in consumer.consume(num_messages=100, timeout=1.0):
                assert message.error() is None, message.error()
                received[message.key()] = message.value()
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert received == sent
