"""KafkaSink against the shared local Kafka (standing in for a customer's cluster)."""
from __future__ import annotations

import uuid
from collections import defaultdict

import pytest

from fleetstream.dev.kafka import Kafka
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.sinks.kafka import KafkaDeliveryError, KafkaSink, RecordTooLarge
from fleetstream.io.sinks.registry import build_sink
from fleetstream.schemas.errors import ConfigError, PermanentWriteError
from tests.helpers import free_port, read_topic

pytest_plugins = ["fleetstream.dev.pytest_plugin", "fleetstream.dev.sink_pytest_plugin"]


@pytest.fixture
def topic(kafka_service: Kafka) -> str:
    name = f"test.sink.{uuid.uuid4().hex[:10]}"
    create_topics(kafka_service.bootstrap, [Topic(name, partitions=3)])
    return name


def sink_for(bootstrap: str, topic: str | None = None, **options) -> KafkaSink:
    sink, _ = build_sink("fleet-a", {"type": "kafka", "bootstrap": bootstrap,
                                     **({"topic": topic} if topic else {}), **options})
    assert isinstance(sink, KafkaSink)
    return sink


def per_vehicle(records) -> dict[str, list[str]]:
    """Per key, message ids in partition order (a vehicle's records share one partition)."""
    order = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition(), r.offset())):
        order[record.key().decode()].append(dict(record.headers())["message_id"].decode())
    return dict(order)


def test_every_document_arrives_keyed_by_vin_in_order(kafka_service, topic, make_batch,
                                                       monkeypatch):
    monkeypatch.setenv("FLEETSTREAM_TEST_CLIENT_ID", "fleetstream-sink-test")
    batch = make_batch(vins=("V1", "V2", "V3", "V4"), per_vehicle=25)
    sink = sink_for(kafka_service.bootstrap, topic,
                    producer_config={"client.id_env": "FLEETSTREAM_TEST_CLIENT_ID",
                                     "linger.ms": 1})
    sink.check()
    sink.open()
    sink.write(batch)
    sink.close()

    stored = read_topic(kafka_service.bootstrap, topic, len(batch.records))
    assert len(stored) == len(batch.records)
    documents = {r.message_id: r for r in batch.records}
    for record in stored:
        headers = dict(record.headers())
        sent = documents[headers["message_id"].decode()]
        assert (record.key(), record.value()) == (sent.vin.encode(), sent.document)
        assert headers["application_id"] == b"fleet-a"
    assert per_vehicle(stored) == per_vehicle_of(batch.records)


def per_vehicle_of(records) -> dict[str, list[str]]:
    order = defaultdict(list)
    for record in records:
        order[record.vin].append(record.message_id)
    return dict(order)


def test_a_retried_batch_delivers_the_same_records_again(kafka_service, topic, make_batch):
    batch = make_batch(per_vehicle=3)
    sink = sink_for(kafka_service.bootstrap, topic)
    sink.write(batch)
    sink.write(batch)
    sink.close()

    stored = read_topic(kafka_service.bootstrap, topic, 2 * len(batch.records))
    copies = defaultdict(list)
    for record in stored:
        copies[dict(record.headers())["message_id"]].append((record.key(), record.value()))
    assert len(copies) == len(batch.records)
    assert all(len(c) == 2 and c[0] == c[1] for c in copies.values())
    assert per_vehicle(stored) == per_vehicle_of([*batch.records, *batch.records])


def test_the_default_topic_is_the_applications(kafka_service, make_batch):
    sink = sink_for(kafka_service.bootstrap)
    assert sink.topic == "fleetstream.fleet-a"
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink\.topic: topic "
                                          r"'fleetstream\.fleet-a' does not exist"):
        sink.check()


def test_check_refuses_a_missing_topic_and_a_setting_librdkafka_does_not_know(kafka_service):
    with pytest.raises(ConfigError, match=r"\.sink\.topic: topic 'no\.such\.topic' does not"):
        sink_for(kafka_service.bootstrap, "no.such.topic").check()
    with pytest.raises(ConfigError, match=r"\.sink\.producer_config: .*no\.such\.setting"):
        sink_for(kafka_service.bootstrap, "t", producer_config={"no.such.setting": 1}).check()


def test_an_unreachable_cluster_fails_the_write(make_batch):
    sink = sink_for(f"127.0.0.1:{free_port()}", "t", producer_config={"message.timeout.ms": 1000})
    with pytest.raises(KafkaDeliveryError, match=r"4 of 4 record\(s\) of batch .* not delivered"):
        sink.write(make_batch())
    sink.close()


def test_a_cluster_that_is_away_fails_the_write_without_waiting_for_the_record_timeout(
        make_batch):
    """With the default 15 s `message.timeout.ms`, the write gives up once librdkafka reports
    every broker down: its records are purged, not left to time out while Deliver's bundle
    (every application on the worker) waits."""
    sink = sink_for(f"127.0.0.1:{free_port()}", "t")
    with pytest.raises(KafkaDeliveryError, match=r"4 of 4 record\(s\) .* every broker is down"):
        sink.write(make_batch())
    sink.close()


def test_a_record_over_message_max_bytes_is_permanent(kafka_service, topic, make_batch):
    sink = sink_for(kafka_service.bootstrap, topic, producer_config={"message.max.bytes": 2000})
    with pytest.raises(RecordTooLarge, match="over the producer's message.max.bytes") as refused:
        sink.write(make_batch(data_bytes=5000))
    assert isinstance(refused.value, PermanentWriteError)
    sink.close()


def test_a_secret_from_the_environment_is_never_in_a_message(monkeypatch):
    monkeypatch.setenv("FLEET_A_KAFKA_PASSWORD", "s3cret-value")
    sink = sink_for("127.0.0.1:9092", "t", producer_config={
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "fleetstream", "sasl.password_env": "FLEET_A_KAFKA_PASSWORD"})
    assert sink._config["sasl.password"] == "s3cret-value"
    assert "s3cret-value" not in repr(sink.options)
    with pytest.raises(ConfigError) as refused:
        sink_for("127.0.0.1:9092", "t", producer_config={
            "sasl.password_env": "FLEET_A_KAFKA_PASSWORD", "acks": 1})
    assert "s3cret-value" not in str(refused.value)


@pytest.mark.parametrize("options, message", [
    ({}, r": sink type 'kafka' needs bootstrap"),
    ({"bootstrap": ""}, r"\.bootstrap: expected HOST:PORT"),
    ({"bootstrap": "b:9092", "topic": 7}, r"\.topic: expected a topic name"),
    ({"bootstrap": "b:9092", "producer_config": ["acks=all"]},
     r"\.producer_config: expected a mapping"),
    ({"bootstrap": "b:9092", "producer_config": {"acks": "1"}},
     r"\.producer_config\.acks: set by FleetStream"),
    ({"bootstrap": "b:9092", "producer_config": {"enable.idempotence": False}},
     r"\.producer_config\.enable\.idempotence: set by FleetStream"),
    ({"bootstrap": "b:9092", "producer_config": {"sasl.password_env": "FLEETSTREAM_UNSET_VAR"}},
     r"\.producer_config\.sasl\.password_env: environment variable FLEETSTREAM_UNSET_VAR is not"),
    ({"bootstrap": "b:9092", "partitions": 3}, r": unknown key\(s\) partitions"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink" + message):
        build_sink("fleet-a", {"type": "kafka", **options})
