"""`fleetstream exporter` on the real broker: consumer lag and approvals as Kafka has them."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.lag import consumer_lag
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.monitoring.exporter import FleetCollector
from fleetstream.settings.config import parse_config
from fleetstream.settings.stream import StreamSettings

pytest_plugins = ["fleetstream.dev.pytest_plugin"]


def _produce(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, key=key, value=value, partition=0)
    assert producer.flush(10) == 0


def test_lag_is_what_the_group_has_not_committed_and_how_old_it_is(kafka_service) -> None:
    bootstrap, run = kafka_service.bootstrap, uuid.uuid4().hex[:8]
    topic, group = f"{run}.raw.tesla", f"group-{run}"
    create_topics(bootstrap, [Topic(topic, partitions=2)])
    _produce(bootstrap, topic, [b"x"] * 10)
    assert consumer_lag(bootstrap, group, [topic])[topic].records == 10   # nothing committed
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    consumer.close()
    time.sleep(1.5)
    lag = consumer_lag(bootstrap, group, [topic])[topic]
    assert lag.records == 3
    assert 1.0 <= lag.seconds < 60
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    consumer.close()
    assert consumer_lag(bootstrap, group, [topic])[topic] == (0, 0.0)


def test_the_exporter_serves_lag_approvals_and_application_info(kafka_service,
                                                                 tmp_path: Path) -> None:
    bootstrap, run = kafka_service.bootstrap, uuid.uuid4().hex[:8]
    raw_topics = {"tesla": f"{run}.raw.tesla"}
    activations = f"{run}.activations"
    create_topics(bootstrap, [Topic(name, partitions=1) for name in (*raw_topics.values(), activations)])
    _produce(bootstrap, raw_topics["tesla"], [b"x"] * 4)
    for vin, status in (("V1", "approved"), ("V2", "approved"), ("V2", "revoked")):
        _produce(bootstrap, activations, [orjson.dumps(
            {"vin": vin, "application_id": "fleet-a", "status": status,
             "at": "2026-01-01T00:00:0%dZ" % (1 if status == "approved" else 2)})],
            key=f"{vin}/fleet-a".encode())
    config = parse_config({"applications": [
        {"id": "fleet-a", "permissions": ["diagnostics.*"],
         "sink": {"type": "file", "path": str(tmp_path)}}]})
    settings = StreamSettings(config, kafka=KafkaSettings(bootstrap, f"group-{run}"),
                              raw_topics=raw_topics, activations_topic=activations)
    text = _scrape(settings)
    assert 'fleetstream_exporter_kafka_up 1.0' in text
    assert f'fleetstream_consumer_lag_records{{topic="{run}.raw.tesla"}} 4.0' in text
    assert 'fleetstream_approved_vehicles{application="fleet-a"} 1.0' in text
    assert ('fleetstream_application_info{app_key="fleet_a",application="fleet-a",sink="file"} 1.0'
            in text)


def test_a_scrape_with_kafka_down_says_so_instead_of_failing(tmp_path: Path) -> None:
    config = parse_config({"applications": [
        {"id": "fleet", "permissions": ["diagnostics.*"],
         "sink": {"type": "file", "path": str(tmp_path)}}]})
    settings = StreamSettings(config, kafka=KafkaSettings("127.0.0.1:1", "group"))
    text = _scrape(settings)
    assert "fleetstream_exporter_kafka_up 0.0" in text
    assert "fleetstream_application_info" in text
    assert "fleetstream_consumer_lag_records{" not in text


def _scrape(settings: StreamSettings) -> str:
    """One scrape of a fresh exporter (which reads Kafka once before it serves)."""
    collector = FleetCollector(settings)
    try:
        registry = CollectorRegistry()
        registry.register(collector)
        return generate_latest(registry).decode()
    finally:
        collector.close()
