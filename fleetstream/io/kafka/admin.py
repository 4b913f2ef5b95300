"""Creating Kafka topics (idempotent): what `fleetstream stream` does before it submits the job.

    create_topics("127.0.0.1:9092", [Topic("raw.tesla"), Topic("activations", 1,
                                                             {"cleanup.policy": "compact"})])

The job's topic names live in `fleetstream.settings.topics`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient, TopicMetadata


@dataclass(frozen=True)
class Topic:
    """A topic to create: name, partitions and topic configs."""

    name: str
    partitions: int = 4
    config: Mapping[str, str] = field(default_factory=dict)


def create_topics(bootstrap: str, topics: Iterable[Topic], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Returns only once every topic's partitions have a leader in the metadata the
    broker serves: a topic created a moment ago may otherwise still read as
    missing to the next client (seen once in CI, on a busy machine)."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    from fleetstream.io.kafka.errors import error_code

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t.name, num_partitions=t.partitions, replication_factor=1,
                  config=dict(t.config)) for t in topics],
        operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except Exception as error:  # noqa: BLE001 - re-raised unless "exists"
            if error_code(error) != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_for_leaders(admin, list(futures), timeout_s)
    return created


def _wait_for_leaders(admin: "AdminClient", names: list[str], timeout_s: float) -> None:
    """Poll the metadata until every topic in `names` has partitions, each with a leader;
    TimeoutError naming the topics still without one after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    waiting = set(names)
    while waiting:
        metadata = admin.list_topics(timeout=timeout_s).topics
        waiting = {name for name in waiting if not _has_leaders(metadata.get(name))}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(waiting)} have no partition leader after "
                               f"{timeout_s:.0f} s: is the broker healthy?")
        time.sleep(0.1)


def _has_leaders(topic: "TopicMetadata | None") -> bool:
    """True when the topic exists with partitions that all have a leader."""
    return (topic is not None and topic.error is None and bool(topic.partitions)
            and all(p.leader >= 0 for p in topic.partitions.values()))
