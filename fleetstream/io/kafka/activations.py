"""The activations topic: publish events so that compaction can never bring back a stale one.

    report = publish_activations("127.0.0.1:9092", "activations", config.activations)

Kafka compacts the topic by key (`vin/application`) and keeps each key's *last record
by offset*; every reader (the streaming job, a cold start) keeps the *winning* event by
the rules of `transforms.activations` (newest `at`, the stricter status on a tie).
The two agree only while each key's last record is its winner. Publishing blindly broke
that: a stale approval re-published after a newer revocation was all a cold start found
once the cleaner had run. `publish_activations` keeps the topic safe:

1. it reads the topic (each key's last record and its winner so far);
2. it offers the new events to the winners; an event that does not win is not written,
   and an approval dated from the future (past `MAX_FUTURE_MS`) is refused;
3. it writes, oldest first, the winner of every key whose last record is not its winner:
   the new events that won, and the winners of keys left stale by someone else (an
   older FleetStream, another producer), which heals them;
4. it reads what arrived meanwhile (its own records and anyone else's) and repeats 3
   until each key's last record is its winner, so that a newer event written by another
   producer between the read and the write is written again after it.

A tombstone (a record without value) forgets its key: it is neither an event nor a
winner, and nothing is re-published over it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import orjson
from confluent_kafka import KafkaException, Producer

from fleetstream.schemas.errors import ConfigError
from fleetstream.io.kafka.producer import READ_MARK_KEY
from fleetstream.io.kafka.topic_reader import read_records
from fleetstream.schemas.activations import ActivationEvent, parse_activation, rank, supersedes
from fleetstream.schemas.timestamps import iso_ms
from fleetstream.transforms.activations import MAX_FUTURE_MS, approval_from_the_future

#: rounds of write-and-check before giving up (another producer keeps writing stale events)
MAX_ROUNDS = 5


def activation_key(event: ActivationEvent) -> bytes:
    """The record key of an event: its pair, so that compaction keeps one record a pair."""
    return f"{event.vin}/{event.application_id}".encode()


def activation_value(event: ActivationEvent) -> bytes:
    """The record value: the event as DATA-CONTRACTS §6 writes it."""
    return orjson.dumps({"vin": event.vin, "application_id": event.application_id,
                         "status": event.status, "at": iso_ms(event.at_ms)})


@dataclass
class ActivationLog:
    """What the topic holds, per record key: its last event and its winning event."""

    last: dict[bytes, ActivationEvent] = field(default_factory=dict)
    winner: dict[bytes, ActivationEvent] = field(default_factory=dict)
    #: partition -> the offset after the last record read
    ends: dict[int, int] = field(default_factory=dict)

    def read(self, bootstrap: str, topic: str) -> None:
        """Take in the records written since the last read."""
        for record in read_records(bootstrap, topic, self.ends):
            self.ends[record.partition()] = record.offset() + 1
            key = record.key()
            if key is None or key == READ_MARK_KEY:
                continue
            if record.value() is None:                  # a tombstone forgets the key
                self.last.pop(key, None)
                self.winner.pop(key, None)
                continue
            try:
                event = parse_activation(orjson.loads(record.value()))
            except (orjson.JSONDecodeError, ValueError):
                continue                                # the job dead-letters it
            self.last[key] = event
            self.offer(key, event)

    def offer(self, key: bytes, event: ActivationEvent) -> bool:
        """Make `event` the key's winner if it wins; whether it did."""
        if supersedes(event, self.winner.get(key)):
            self.winner[key] = event
            return True
        return False

    def stale(self) -> list[tuple[bytes, ActivationEvent]]:
        """(key, winner) of every key whose last record is not its winner, oldest first."""
        return sorted(((key, event) for key, event in self.winner.items()
                       if self.last.get(key) != event), key=lambda pair: rank(pair[1]))


class PublishReport(NamedTuple):
    """What `publish_activations` did."""

    written: int        # records written (new winners and healed keys, every round)
    superseded: int     # given events not written: the topic (or another given event) had a
                        # newer one, or the same one
    healed: int         # keys whose last record was stale before this call


def publish_activations(bootstrap: str, topic: str, events: Iterable[ActivationEvent],
                        now_ms: int | None = None, timeout_s: float = 30.0) -> PublishReport:
    """Write the events that win over the topic's, oldest first, and heal stale keys.

    Raises ConfigError for an approval dated more than MAX_FUTURE_MS ahead of `now_ms`
    (this machine's clock by default), KafkaException when a write fails or other
    producers keep the topic stale.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    events = list(events)
    for event in events:
        if approval_from_the_future(event, now_ms):
            raise ConfigError(
                f"activations: the approval of {event.vin} for {event.application_id} is "
                f"dated {iso_ms(event.at_ms)}, more than {MAX_FUTURE_MS // 1000} s ahead of "
                f"this machine's clock ({iso_ms(now_ms)}); correct its `at` (or the clock)")
    log = ActivationLog()
    log.read(bootstrap, topic)
    healed = len(log.stale())
    superseded = sum(not log.offer(activation_key(event), event) for event in events)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all"})
    written = 0
    for _ in range(MAX_ROUNDS):
        stale = log.stale()
        if not stale:
            return PublishReport(written, superseded, healed)
        failures: list[str] = []

        def delivered(error, _message) -> None:
            if error is not None:
                failures.append(str(error))

        for key, event in stale:
            producer.produce(topic, key=key, value=activation_value(event),
                             on_delivery=delivered)
        if producer.flush(timeout_s) or failures:
            raise KafkaException(f"activations not all written to {topic} within "
                                 f"{timeout_s:.0f} s: {failures[:1] or 'flush timed out'}")
        written += len(stale)
        log.read(bootstrap, topic)
    raise KafkaException(f"{topic}: keys still stale after {MAX_ROUNDS} rounds (another "
                         f"producer keeps writing older events over newer ones): "
                         f"{[key.decode(errors='replace') for key, _ in log.stale()][:5]}")
