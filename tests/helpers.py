"""Small builders shared by the tests."""
from __future__ import annotations

import uuid
from typing import Any

from fleetstream.dev.service import free_port  # noqa: F401 - the tests' import of it
from fleetstream.schemas.mapped import MappedMessage


def message(newest_ms: int, smid: str | None = None, received_ms: int | None = None,
            source: str = "tesla", odometer: float = 1.0) -> MappedMessage:
    """A mapped message with one odometer entry at `newest_ms`."""
    return MappedMessage(
        source, smid or f"id-{newest_ms}", received_ms if received_ms is not None else newest_ms,
        newest_ms,
        {"diagnostics": {"odometer": [{"data": {"value": odometer, "unit": "kilometers"},
                                       "timestamp": "t"}]}})


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """The records of `topic` from its start: once `expected` came, one more second's worth."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[Any] = []
    try:
        for _ in range(int(timeout_s)):
            got += [m for m in consumer.consume(500, timeout=1.0) if m.error() is None]
            if len(got) >= expected:
                # anything more than expected would show up here
                got += [m for m in consumer.consume(500, timeout=1.0) if m.error() is None]
                break
    finally:
        consumer.close()
    return got
