"""The local Kafka: topics are created and keyed records make the round trip."""
from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from fleetstream.dev.kafka import LOCAL_RETENTION_HOURS, Kafka
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.offsets import reset_group_offsets
from fleetstream.io.kafka.producer import mark_partitions
from fleetstream.io.kafka.topic_reader import TopicReadError
from fleetstream.settings.topics import FLEETSTREAM_TOPICS

pytest_plugins = ["fleetstream.dev.pytest_plugin"]


def test_fleetstream_topics_exist_with_their_partitions(kafka_service: Kafka) -> None:
    create_topics(kafka_service.bootstrap, FLEETSTREAM_TOPICS)
    assert create_topics(kafka_service.bootstrap, FLEETSTREAM_TOPICS) == []  # idempotent
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


def test_group_offsets_reset_to_a_time_start_and_end(kafka_service: Kafka) -> None:
    topic = f"reset-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic, 2)])
    producer = Producer({"bootstrap.servers": kafka_service.bootstrap})
    t0 = 1_772_352_000_000
    for i in range(10):   # partition 0 gets times t0..t0+9 s; partition 1 only the first five
        producer.produce(topic, value=b"x", partition=0, timestamp=t0 + i * 1000)
        if i < 5:
            producer.produce(topic, value=b"y", partition=1, timestamp=t0 + i * 1000)
    producer.flush(10)
    group = f"group-{uuid.uuid4().hex[:6]}"
    at_time = reset_group_offsets(kafka_service.bootstrap, group, [topic], t0 + 7000)
    # partition 1 has nothing that late: it starts at its end, where KafkaIO's own
    # start_read_time fails the job
    assert at_time == {(topic, 0): 7, (topic, 1): 5}
    consumer = Consumer({"bootstrap.servers": kafka_service.bootstrap, "group.id": group})
    committed = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)],
                                   timeout=10)
    consumer.close()
    assert [p.offset for p in committed] == [7, 5]
    assert reset_group_offsets(kafka_service.bootstrap, group, [topic], "earliest") == {
        (topic, 0): 0, (topic, 1): 0}
    assert reset_group_offsets(kafka_service.bootstrap, group, [topic], "latest") == {
        (topic, 0): 10, (topic, 1): 5}
    with pytest.raises(TopicReadError, match="does not exist"):
        reset_group_offsets(kafka_service.bootstrap, group, [f"{topic}-missing"], "earliest")


def test_every_activations_partition_gets_one_read_mark(kafka_service: Kafka) -> None:
    topic = f"marks-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic, 3, {"cleanup.policy": "compact"})])
    assert mark_partitions(kafka_service.bootstrap, topic) == 3
    consumer = Consumer({"bootstrap.servers": kafka_service.bootstrap, "group.id": topic})
    try:
        for partition in range(3):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=10)
            assert high - low == 1, partition
    finally:
        consumer.close()
    with pytest.raises(KafkaException, match="does not exist"):
        mark_partitions(kafka_service.bootstrap, f"{topic}-missing", timeout_s=5)


def test_write_json_to_kafka_writes_pairs_and_keyed_dicts(kafka_service: Kafka) -> None:
    import apache_beam as beam
    import orjson
    from apache_beam.testing.test_pipeline import TestPipeline

    from fleetstream.io.kafka.settings import KafkaSettings
    from fleetstream.io.kafka.transforms import WriteJsonToKafka

    topic = f"write-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic, 2)])
    kafka = KafkaSettings(kafka_service.bootstrap)
    with TestPipeline() as pipeline:
        _ = (pipeline | "Pairs" >> beam.Create([("V1", b'{"a":1}'), ("V2", {"b": 2})])
             | "WritePairs" >> WriteJsonToKafka(kafka, topic))
        _ = (pipeline | "Dicts" >> beam.Create([{"source": "tesla", "n": 3}])
             | "WriteDicts" >> WriteJsonToKafka(kafka, topic, key_field="source"))
    consumer = Consumer({"bootstrap.servers": kafka_service.bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received = {}
    try:
        for _ in range(30):
            for message in consumer.consume(num_messages=10, timeout=1.0):
                received[message.key()] = orjson.loads(message.value())
            if len(received) == 3:
                break
    finally:
        consumer.close()
    assert received == {b"V1": {"a": 1}, b"V2": {"b": 2}, b"tesla": {"source": "tesla", "n": 3}}


def test_the_local_broker_keeps_a_topics_records_a_day_in_hourly_segments(
        kafka_service: Kafka) -> None:
    """Retention only drops closed segments: without hourly rolls a test topic's one
    segment would stay forever, whatever the retention."""
    topic = f"test.retention.{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic)])
    admin = AdminClient({"bootstrap.servers": kafka_service.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert int(configs["retention.ms"].value) == LOCAL_RETENTION_HOURS * 3600 * 1000
    assert int(configs["segment.ms"].value) == 3600 * 1000


def test_a_restarted_broker_takes_writes_as_soon_as_start_returns(private_kafka: Kafka) -> None:
    """Before, start() returned once metadata was served, while writes still timed out: the
    tests that ran after a restart met 503s and topics said to be missing."""
    topics = [Topic(f"restart-{uuid.uuid4().hex[:8]}-{i}", 4) for i in range(50)]
    create_topics(private_kafka.bootstrap, topics)
    private_kafka.stop()
    # stopped cleanly (not KILLed), so the next start recovers no partition
    assert (private_kafka.data_dir / "log-dirs" / ".kafka_cleanshutdown").exists()
    private_kafka.start()
    errors: list = []
    producer = Producer({"bootstrap.servers": private_kafka.bootstrap, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": 5000})
    for topic in topics:
        producer.produce(topic.name, b"x", on_delivery=lambda error, _: errors.append(error))
    producer.flush(10)
    assert errors == [None] * len(topics)
    new = f"restart-new-{uuid.uuid4().hex[:8]}"
    create_topics(private_kafka.bootstrap, [Topic(new)])
    producer.produce(new, b"y", on_delivery=lambda error, _: errors.append(error))
    producer.flush(10)
    assert errors[-1] is None
