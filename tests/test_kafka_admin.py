"""create_topics returns only once the topics can be used: every partition has a leader."""
from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer

from fleetstream.dev.kafka import Kafka
from fleetstream.io.kafka import admin
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.topic_reader import topic_partitions

pytest_plugins = ["fleetstream.dev.pytest_plugin"]


class _SlowMetadata:
    """An AdminClient whose metadata shows the topic without leaders for `late` polls."""

    def __init__(self, late: int) -> None:
        self.late, self.polls = late, 0

    def list_topics(self, timeout: float) -> SimpleNamespace:
        self.polls += 1
        leader = -1 if self.polls <= self.late else 1
        partitions = {0: SimpleNamespace(leader=1), 1: SimpleNamespace(leader=leader)}
        return SimpleNamespace(topics={"t": SimpleNamespace(error=None, partitions=partitions)})


def test_the_wait_polls_until_every_partition_has_a_leader() -> None:
    slow = _SlowMetadata(late=3)
    admin._wait_for_leaders(slow, ["t"], timeout_s=5)
    assert slow.polls == 4


def test_a_topic_that_never_gets_a_leader_is_a_timeout_naming_it() -> None:
    with pytest.raises(TimeoutError, match=r"\['t'\] have no partition leader"):
        admin._wait_for_leaders(_SlowMetadata(late=10**6), ["t"], timeout_s=0.3)


def test_every_topic_created_is_readable_at_once(kafka_service: Kafka) -> None:
    names = [f"admin-{uuid.uuid4().hex[:8]}-{i}" for i in range(20)]
    assert sorted(create_topics(kafka_service.bootstrap, [Topic(n, 3) for n in names])) \
        == sorted(names)
    consumer = Consumer({"bootstrap.servers": kafka_service.bootstrap, "group.id": "admin-test"})
    try:
        for name in names:
            assert topic_partitions(consumer, kafka_service.bootstrap, name) == [0, 1, 2]
    finally:
        consumer.close()
    # a second call creates nothing and still returns once the topics are usable
    assert create_topics(kafka_service.bootstrap, [Topic(n, 3) for n in names]) == []
