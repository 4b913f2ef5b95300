"""Creating Kafka topics (idempotent): what `fleetstream stream` does before it submits the job.

    create_topics("127.0.0.1:9092", [Topic("raw.tesla"), Topic("activations", 1,
                                                             {"cleanup.policy": "compact"})])

The job's topic names live in `fleetstream.settings.topics`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Topic:
    """A topic to create: name, partitions and topic configs."""

    name: str
    partitions: int = 4
    config: Mapping[str, str] = field(default_factory=dict)


def create_topics(bootstrap: str, topics: Iterable[Topic], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

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
            code = error.args[0].code() if error.args and hasattr(error.args[0], "code") else None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
