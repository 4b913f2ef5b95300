"""The Pub/Sub bridge between the local Pub/Sub emulator and the local Kafka."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, Callable, Iterator

import orjson
import pytest
from google.cloud import pubsub_v1

from fleetstream.dev.kafka import Kafka
from fleetstream.dev.pubsub import PubSubEmulator
from fleetstream.ingest.bridges.pubsub import PubSubBridge
from fleetstream.ingest.bridges.registry import build_bridge
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.service import serve
from fleetstream.ingest.writer import KafkaUnavailable, RawWriter
from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.ingest import parse_ingest_settings
from tests.helpers import read_topic

pytest_plugins = ["fleetstream.dev.pytest_plugin", "fleetstream.dev.sink_pytest_plugin"]

PROJECT = "fleetstream-test"


class Subscription:
    """A new topic and subscription on the emulator, and a publisher for it."""

    def __init__(self, emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        name = f"t-{uuid.uuid4().hex[:10]}"
        self.id = f"{name}-sub"
        self.publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = self.publisher.create_topic(name=f"projects/{PROJECT}/topics/{name}").name
        self.path = self.subscriber.create_subscription(
            name=f"projects/{PROJECT}/subscriptions/{self.id}", topic=self.topic,
            ack_deadline_seconds=10).name

    def publish(self, data: bytes, ordering_key: str = "", **attributes: str) -> None:
        self.publisher.publish(self.topic, data, ordering_key=ordering_key,
                               **attributes).result(timeout=10)

    def left(self) -> int:
        """Messages still waiting (not acknowledged), pulled and handed back at once."""
        response = self.subscriber.pull(subscription=self.path, max_messages=100, timeout=5)
        if response.received_messages:
            self.subscriber.modify_ack_deadline(
                subscription=self.path, ack_deadline_seconds=0,
                ack_ids=[m.ack_id for m in response.received_messages])
        return len(response.received_messages)


@pytest.fixture
def subscription(pubsub_service: PubSubEmulator,
                 monkeypatch: pytest.MonkeyPatch) -> Subscription:
    return Subscription(pubsub_service, monkeypatch)


@pytest.fixture
def kafka_topic() -> str:
    return f"test.pubsub.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def writer(kafka_service: Kafka, kafka_topic: str) -> Iterator[RawWriter]:
    raw_writer = RawWriter(kafka_service.bootstrap, dead_letters_topic=f"{kafka_topic}.dlq")
    raw_writer.ensure_topics([kafka_topic])
    yield raw_writer
    raw_writer.close()


def bridge(emulator: PubSubEmulator, subscription: Subscription, kafka_topic: str,
           **options: Any) -> PubSubBridge:
    built = build_bridge("pubsub", "tesla", kafka_topic, {
        "project": PROJECT, "subscription": subscription.id, "emulator_host": emulator.host,
        **options}, "sources.tesla.pubsub")
    assert isinstance(built, PubSubBridge)
    return built


def run_until(built: PubSubBridge, writer: Any, done: Callable[[], bool],
              timeout_s: float = 30.0) -> IngestMetrics:
    """Run the bridge until `done()` holds (checked between pulls), then stop it."""
    metrics = IngestMetrics()

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(built.run(writer, metrics, stop))
        try:
            for _ in range(int(timeout_s * 10)):
                if done() or running.done():
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)

    asyncio.run(scenario())
    return metrics


def test_published_messages_reach_kafka_byte_for_byte_with_their_vin(
        pubsub_service: PubSubEmulator, kafka_service: Kafka, subscription: Subscription,
        kafka_topic: str, writer: RawWriter) -> None:
    payloads = [orjson.dumps({"i": i, "speed": i * 1.5}) + bytes([0, 255, i]) for i in range(30)]
    for i, payload in enumerate(payloads[:20]):
        subscription.publish(payload, vin=f"VIN{i:03d}")
    for i, payload in enumerate(payloads[20:], start=20):
        subscription.publish(payload, ordering_key=f"VIN{i:03d}")
    built = bridge(pubsub_service, subscription, kafka_topic, vin_attribute="vin",
                   max_messages=7)
    metrics = run_until(built, writer, lambda: False, timeout_s=4)
    got = read_topic(kafka_service.bootstrap, kafka_topic, len(payloads))
    assert sorted((m.key(), m.value()) for m in got) == sorted(
        (f"VIN{i:03d}".encode(), p) for i, p in enumerate(payloads))
    assert metrics.records.labels(source="tesla", via="pubsub")._value.get() == len(payloads)
    assert subscription.left() == 0


class FailingFirst:
    """A writer whose first write of each payload fails as if Kafka were away."""

    def __init__(self, writer: RawWriter) -> None:
        self.writer = writer
        self.attempts: dict[bytes, int] = {}

    async def write(self, topic: str, value: bytes, key: bytes | None = None,
                    timestamp_ms: int | None = None) -> None:
        self.attempts[value] = self.attempts.get(value, 0) + 1
        if self.attempts[value] == 1:
            raise KafkaUnavailable("test: Kafka is away")
        await self.writer.write(topic, value, key, timestamp_ms)


def test_a_message_is_acked_only_after_its_write_and_redelivered_when_it_fails(
        pubsub_service: PubSubEmulator, kafka_service: Kafka, subscription: Subscription,
        kafka_topic: str, writer: RawWriter) -> None:
    payloads = [f"message {i}".encode() for i in range(5)]
    for payload in payloads:
        subscription.publish(payload)
    failing = FailingFirst(writer)
    built = bridge(pubsub_service, subscription, kafka_topic)
    run_until(built, failing, lambda: all(failing.attempts.get(p, 0) >= 2 for p in payloads))
    assert all(failing.attempts[p] >= 2 for p in payloads), failing.attempts
    got = read_topic(kafka_service.bootstrap, kafka_topic, len(payloads))
    assert sorted(m.value() for m in got) == sorted(payloads)
    assert all(m.key() is None for m in got)
    assert subscription.left() == 0


def test_a_message_kafka_never_takes_stays_in_the_subscription(
        pubsub_service: PubSubEmulator, subscription: Subscription, kafka_topic: str) -> None:
    subscription.publish(b"kept")
    away = RawWriter("127.0.0.1:1", timeout_s=0.5)
    try:
        run_until(bridge(pubsub_service, subscription, kafka_topic), away, lambda: False,
                  timeout_s=2)
    finally:
        away.close(1)
    assert subscription.left() == 1


def test_a_poison_message_goes_to_the_dead_letters_and_is_acked(
        pubsub_service: PubSubEmulator, kafka_service: Kafka, subscription: Subscription,
        kafka_topic: str, writer: RawWriter) -> None:
    subscription.publish(b"p" * 2000, vin="VINPOISON")
    subscription.publish(b"fine", vin="VINFINE")
    built = bridge(pubsub_service, subscription, kafka_topic, vin_attribute="vin",
                   max_payload_bytes=1000)
    metrics = run_until(built, writer, lambda: False, timeout_s=3)
    letters = read_topic(kafka_service.bootstrap, f"{kafka_topic}.dlq", 1)
    assert len(letters) == 1
    letter = orjson.loads(letters[0].value())
    assert (letter["source"], letter["stage"], letter["payload"]) == ("tesla", "ingest",
                                                                       "p" * 2000)
    assert "max_payload_bytes" in letter["errors"][0]["reason"]
    assert [m.value() for m in read_topic(kafka_service.bootstrap, kafka_topic, 1)] == [b"fine"]
    assert metrics.dead_letters.labels(source="tesla", via="pubsub")._value.get() == 1
    assert subscription.left() == 0


@pytest.mark.parametrize(("options", "error"), [
    ({"project": "p"}, r"sources.tesla.pubsub: missing subscription"),
    ({"project": "p", "subscription": "s", "max_messages": 0}, r"pubsub.max_messages"),
    ({"project": "p", "subscription": "s", "emulator_host": "8085"}, r"pubsub.emulator_host"),
    ({"project": "p", "subscription": "projects/p/subscriptions/s"}, r"pubsub.subscription"),
    ({"project": "p", "subscription": "s", "topic": "t"}, r"topic"),
])
def test_wrong_options_are_refused_naming_the_key(options: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build_bridge("pubsub", "tesla", "raw.tesla", options, "sources.tesla.pubsub")


def test_the_gateway_runs_the_bridge_of_a_pubsub_section(
        pubsub_service: PubSubEmulator, kafka_service: Kafka, subscription: Subscription,
        kafka_topic: str) -> None:
    settings = parse_ingest_settings({
        "kafka": {"bootstrap": kafka_service.bootstrap},
        "sources": {"tesla": {"topic": kafka_topic, "pubsub": {
            "project": PROJECT, "subscription": subscription.id,
            "emulator_host": pubsub_service.host}}}})
    subscription.publish(b"through the gateway", ordering_key="VIN42")

    async def scenario() -> None:
        stop = asyncio.Event()
        gateway = asyncio.create_task(serve(settings, stop))
        await asyncio.sleep(3)
        stop.set()
        await asyncio.wait_for(gateway, 15)

    asyncio.run(scenario())
    got = read_topic(kafka_service.bootstrap, kafka_topic, 1)
    assert [(m.key(), m.value()) for m in got] == [(b"VIN42", b"through the gateway")]
    assert subscription.left() == 0
