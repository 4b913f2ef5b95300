"""PubSubSink against the local Pub/Sub emulator (pstest)."""
from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1.types import pubsub as types

from fleetstream.dev.pubsub import PubSubEmulator
from fleetstream.io.sinks.pubsub import (FRAMING_BYTES, MAX_MESSAGES_PER_REQUEST, MessageTooLarge,
                                         PubSubDeliveryError, PubSubSink, publish_rounds)
from fleetstream.io.sinks.registry import build_sink
from fleetstream.schemas.delivery import Batch
from fleetstream.schemas.errors import ConfigError, PermanentWriteError

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

        #: a subscription without ordering: it delivers every message at once
        self.unordered = f"{self.subscription}-unordered"

    def create(self) -> None:
        self.publisher.create_topic(name=self.path)
        self.subscriber.create_subscription(request={
            "name": self.subscription, "topic": self.path, "enable_message_ordering": True})
        self.subscriber.create_subscription(name=self.unordered, topic=self.path)

    def pull(self, expected: int, ordered: bool = True) -> list:
        """Messages as delivered (acknowledged), until `expected` came and a pull found no more.

        The emulator's ordered subscription delivers one message per ordering key per pull."""
        got: list = []
        for _ in range(50 if ordered else 10):
            response = self.subscriber.pull(
                subscription=self.subscription if ordered else self.unordered,
                max_messages=1000, timeout=5)
            received = response.received_messages
            if received:
                self.subscriber.acknowledge(
                    subscription=self.subscription if ordered else self.unordered,
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
    sink = sink_for(pubsub_service, topic)
    sink.check()
    sink.open()
    for start in range(0, len(batch.records), 7):    # Deliver's batches of 7 documents
        sink.write(Batch(batch.application_id, f"b{start}", batch.records[start:start + 7]))
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
    # as the ordered subscription delivered them: each vehicle's in order, across batches
    assert per_vehicle((m.ordering_key, m.attributes["message_id"]) for m in messages) == \
        per_vehicle((r.vin, r.message_id) for r in batch.records)


def received_order(messages) -> dict[str, list[str]]:
    """Each vehicle's message ids in the order the emulator received them (it numbers the
    messages it accepts `m1`, `m2`, ... in turn; the order an ordered subscription keeps)."""
    by_arrival = sorted(messages, key=lambda m: int(m.message_id.removeprefix("m")))
    return per_vehicle((m.ordering_key, m.attributes["message_id"]) for m in by_arrival)


def test_a_vehicle_over_one_requests_limit_is_published_in_order_in_several_requests(
        pubsub_service, topic, make_batch):
    many = make_batch(vins=("V1",), per_vehicle=2 * MAX_MESSAGES_PER_REQUEST + 500)
    few = make_batch(vins=("V2", "V3"), per_vehicle=3)
    batch = Batch("fleet-a", "big", [*few.records[:2], *many.records, *few.records[2:]])
    sink = sink_for(pubsub_service, topic)
    sink.write(batch)
    sink.close()

    messages = topic.pull(len(batch.records), ordered=False)
    assert len({m.attributes["message_id"] for m in messages}) == len(batch.records)
    assert received_order(messages) == per_vehicle((r.vin, r.message_id) for r in batch.records)


def test_a_failed_request_fails_its_vehicle_and_stops_its_later_requests(
        pubsub_service, topic, make_batch):
    """The emulator's gRPC server takes at most 4 MiB per request (Pub/Sub: 10 MB): V1's
    first request (eight 1.2 MB documents) is refused, so its next one is never sent, while
    V2's request is published."""
    large = make_batch(vins=("V1",), per_vehicle=9, data_bytes=1_200_000)
    small = make_batch(vins=("V2",), per_vehicle=3)
    batch = Batch("fleet-a", "mixed", [*small.records, *large.records])
    sink = sink_for(pubsub_service, topic)
    with pytest.raises(PubSubDeliveryError,
                       match=r": 0 message\(s\) .* and 1 vehicle\(s\) failed; first error: "
                             r"ResourceExhausted"):
        sink.write(batch)
    sink.close()
    assert received_order(topic.pull(len(small.records), ordered=False)) == \
        per_vehicle((r.vin, r.message_id) for r in small.records)


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


def message(key: str, data_bytes: int = 10, number: int = 0):
    return types.PubsubMessage.pb()(data=b"x" * data_bytes, ordering_key=key,
                                     attributes={"message_id": f"{key}-{number}"})


def test_each_request_holds_one_keys_messages_in_order_within_the_limits():
    messages = [message(key, number=n) for n in range(2500) for key in ("A", "B")]
    messages += [message("C", data_bytes=12_000, number=n) for n in range(10)]
    rounds = publish_rounds(messages, max_bytes=50_000)

    for requests in rounds:
        keys = [{m.ordering_key for m in request} for request in requests]
        assert all(len(request_keys) == 1 for request_keys in keys)   # Pub/Sub's rule
        assert len({key for request_keys in keys for key in request_keys}) == len(requests)
        for request in requests:
            assert len(request) <= MAX_MESSAGES_PER_REQUEST
            assert sum(m.ByteSize() + FRAMING_BYTES for m in request) <= 50_000
    # round after round, each key's messages come in their order, none lost or repeated
    sent = per_vehicle((m.ordering_key, m.attributes["message_id"])
                       for requests in rounds for request in requests for m in request)
    assert sent == per_vehicle((m.ordering_key, m.attributes["message_id"]) for m in messages)
    # A and B: 1,000 messages a request; C: four 12 kB messages fit in 50 kB
    assert [[len(request) for request in requests] for requests in rounds] == \
        [[1000, 1000, 4], [1000, 1000, 4], [500, 500, 2]]


def test_a_message_over_a_requests_limit_is_a_permanent_error():
    with pytest.raises(MessageTooLarge, match=r"^document C-0 of vehicle C is 3000 bytes") \
            as raised:
        publish_rounds([message("A"), message("C", data_bytes=3000)], max_bytes=2000)
    assert isinstance(raised.value, PermanentWriteError)


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
