"""PubSubSink against the local Pub/Sub emulator (pstest)."""
from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from google.cloud import pubsub_v1

from fleetstream.dev.pubsub import PubSubEmulator
from fleetstream.io.sinks.pubsub import PubSubDeliveryError, PubSubSink
from fleetstream.io.sinks.registry import build_sink
from fleetstream.schemas.errors import ConfigError

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]

PROJECT = "fleetstream-test"


class Topic:
    """A topic id on the emulator (created by `create`) with an ordered subscription."""

    def __init__(self, emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        self.id = f"t-{uuid.uuid4().hex[:10]}"
        self.path = f"projects/{PROJECT}/topics/{self.id}"
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.subscription = f"projects/{PROJECT}/subscriptions/{self.id}-sub"

    def create(self) -> None:
        self.publisher.create_topic(name=self.path)
        self.subscriber.create_subscription(request={
            "name": self.subscription, "topic": self.path, "enable_message_ordering": True})

    def pull(self, expected: int) -> list:
        """Messages as delivered (acknowledged), until `expected` came and a pull found no more."""
        got: list = []
        for _ in range(50):
            response = self.subscriber.pull(subscription=self.subscription, max_messages=500,
                                            timeout=5)
            received = response.received_messages
            if received:
                self.subscriber.acknowledge(subscription=self.subscription,
                                            ack_ids=[m.ack_id for m in received])
            got += [m.message for m in received]
            if len(got) >= expected and not received:
                break
        return got


@pytest.fixture
def topic(pubsub_service: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> Topic:
    created = Topic(pubsub_service, monkeypatch)
    created.create()
    return created


def sink_for(emulator: PubSubEmulator, topic: Topic, **knobs) -> PubSubSink:
    sink, _ = build_sink("fleet-a", {"type": "pubsub", "project": PROJECT, "topic": topic.id,
                                     "emulator_host": emulator.host, **knobs})
    assert isinstance(sink, PubSubSink)
    return sink


def per_vehicle(message_ids_and_vins) -> dict[str, list[str]]:
    order = defaultdict(list)
    for vin, message_id in message_ids_and_vins:
        order[vin].append(message_id)
    return dict(order)


def test_every_document_arrives_with_its_ordering_key_attributes_and_bytes(
        pubsub_service, topic, make_batch):
    batch = make_batch(vins=("V1", "V2", "V3"), per_vehicle=20)
    sink = sink_for(pubsub_service, topic, max_records=7)   # several client batches per key
    sink.check()
    sink.open()
    sink.write(batch)
    sink.close()

    messages = topic.pull(len(batch.records))
    by_id = {m.attributes["message_id"]: m for m in messages}
    assert len(messages) == len(by_id) == len(batch.records)
    for record in batch.records:
        message = by_id[record.message_id]
        assert message.data == record.document
        assert message.ordering_key == record.vin
        assert dict(message.attributes) == {"application_id": "fleet-a",
                                            "message_id": record.message_id, "vin": record.vin}
    assert per_vehicle((m.ordering_key, m.attributes["message_id"]) for m in messages) == \
        per_vehicle((r.vin, r.message_id) for r in batch.records)


def test_a_retried_batch_delivers_the_same_messages_again(pubsub_service, topic, make_batch):
    batch = make_batch(per_vehicle=3)
    sink = sink_for(pubsub_service, topic)
    sink.write(batch)
    sink.write(batch)
    sink.close()

    messages = topic.pull(2 * len(batch.records))
    copies = defaultdict(list)
    for message in messages:
        copies[message.attributes["message_id"]].append(message.data)
    assert set(copies) == {r.message_id for r in batch.records}
    assert all(len(datas) == 2 and datas[0] == datas[1] for datas in copies.values())
    # each copy in order per vehicle: the first write's, then the retry's
    assert per_vehicle((m.ordering_key, m.attributes["message_id"]) for m in messages) == \
        per_vehicle((r.vin, r.message_id) for r in [*batch.records, *batch.records])


def test_a_failed_publish_raises_and_the_retry_goes_on(pubsub_service, monkeypatch, make_batch):
    later = Topic(pubsub_service, monkeypatch)   # not created yet: every publish fails
    batch = make_batch(per_vehicle=2)
    sink = sink_for(pubsub_service, later)
    with pytest.raises(PubSubDeliveryError, match=r"2 vehicle\(s\) failed; first error: NotFound"):
        sink.write(batch)
    later.create()
    sink.write(batch)   # the failed ordering keys were resumed: the retry is published
    sink.close()
    assert sorted(m.attributes["message_id"] for m in later.pull(len(batch.records))) == \
        sorted(r.message_id for r in batch.records)


def test_check_refuses_a_missing_topic(pubsub_service, monkeypatch):
    missing = Topic(pubsub_service, monkeypatch)
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink\.topic: topic "
                                          r"'projects/fleetstream-test/topics/t-.*' does not exist"):
        sink_for(pubsub_service, missing).check()


def test_knobs_size_the_clients_batches():
    sink, _ = build_sink("fleet-a", {"type": "pubsub", "project": "p", "topic": "t",
                                     "emulator_host": "127.0.0.1:1", "max_records": 5000, "max_bytes": 1 << 30, "max_delay": 0.2})
    settings = sink.client().batch_settings
    assert (settings.max_messages, settings.max_bytes, settings.max_latency) == \
        (1000, 10_000_000, 0.2)


@pytest.mark.parametrize("options, message", [
    ({}, r": sink type 'pubsub' needs project, topic"),
    ({"project": "p"}, r": sink type 'pubsub' needs topic"),
    ({"project": "p", "topic": "projects/p/topics/t"}, r"\.topic: expected a Pub/Sub topic id"),
    ({"project": "", "topic": "t"}, r"\.project: expected a Pub/Sub project id"),
    ({"project": "p", "topic": "t", "emulator_host": "localhost"}, r"\.emulator_host: expected"),
    ({"project": "p", "topic": "t", "ordering": True}, r": unknown key\(s\) ordering"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink" + message):
        build_sink("fleet-a", {"type": "pubsub", **options})
