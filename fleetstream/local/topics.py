"""FleetStream's Kafka topics and a function that creates them (idempotent).

One raw topic per car maker (keyed by vehicle, so a vehicle's records stay in
order within a partition), plus dead letters, delivered records and the
activations table (compacted: the latest activation per key is kept).
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


FLEETSTREAM_TOPICS: tuple[Topic, ...] = (
    *(Topic(f"raw.{maker}") for maker in ("tesla", "bmw", "mercedes", "smartcar")),
    Topic("dead-letters"),
    Topic("delivered"),
    Topic("activations", partitions=1, config={"cleanup.policy": "compact"}),
)


def create_topics(bootstrap: str = "127.0.0.1:9092",
                  topics: Iterable[Topic] = FLEETSTREAM_TOPICS,
                  timeout_s: float = 30.0) -> list[str]:
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
