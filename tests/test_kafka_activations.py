"""publish_activations on a real broker: each key's last record is always its winning event.

Compaction keeps the last record by offset, readers keep the winner (newest `at`,
stricter status on a tie): after every publish the two must be the same record,
whatever was on the topic before, whatever the configuration lists, and whatever
another producer wrote in between.
"""
from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetstream.schemas.errors import ConfigError
from fleetstream.io.kafka.activations import (ActivationLog, activation_key, activation_value,
                                              publish_activations)
from fleetstream.io.kafka.topic_reader import read_records
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.schemas.activations import ActivationEvent
from fleetstream.schemas.activations import ACTIVATION_STATUSES, rank

pytest_plugins = ["fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

NOW = 1_800_000_000_000


def fresh_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"activations-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [Topic(topic, partitions, {"cleanup.policy": "compact"})])
    return topic


def write_raw(bootstrap: str, topic: str, events: list[ActivationEvent]) -> None:
    """What another producer, blind to the rules, writes."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in events:
        producer.produce(topic, key=activation_key(event), value=activation_value(event))
    assert producer.flush(10) == 0


def last_records(bootstrap: str, topic: str) -> dict[bytes, ActivationEvent]:
    """What compaction would keep: each key's last event by offset."""
    log = ActivationLog()
    log.read(bootstrap, topic)
    return log.last


def values(bootstrap: str, topic: str) -> list[dict]:
    return [orjson.loads(r.value()) for r in read_records(bootstrap, topic)]


def test_a_stale_configuration_event_is_not_written_over_a_newer_revocation(kafka_service) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    approval = ActivationEvent("V", "a", "approved", 1_000)
    assert publish_activations(bootstrap, topic, [approval], NOW).written == 1
    revocation = ActivationEvent("V", "a", "revoked", 2_000)
    write_raw(bootstrap, topic, [revocation])                      # live, by an operator
    report = publish_activations(bootstrap, topic, [approval], NOW)   # the next submit
    assert (report.written, report.superseded, report.healed) == (0, 1, 0)
    assert last_records(bootstrap, topic) == {b"V/a": revocation}


def test_events_are_written_oldest_first_and_only_each_pair_s_winner(kafka_service) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    # the file lists an older approval after a newer revocation of the same pair
    listed = [ActivationEvent("V", "a", "revoked", 2_000), ActivationEvent("W", "a", "approved", 500),
              ActivationEvent("V", "a", "approved", 1_000)]
    report = publish_activations(bootstrap, topic, listed, NOW)
    assert (report.written, report.superseded) == (2, 1)
    assert [(v["vin"], v["status"]) for v in values(bootstrap, topic)] == [
        ("W", "approved"), ("V", "revoked")]


def test_a_key_left_stale_by_another_producer_is_healed(kafka_service) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    revocation = ActivationEvent("V", "a", "revoked", 2_000)
    write_raw(bootstrap, topic, [revocation, ActivationEvent("V", "a", "approved", 1_000)])
    report = publish_activations(bootstrap, topic, [], NOW)
    assert (report.written, report.healed) == (1, 1)
    assert last_records(bootstrap, topic) == {b"V/a": revocation}


def test_a_newer_event_written_between_the_read_and_the_write_is_written_again_after(
        kafka_service, monkeypatch) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    revocation = ActivationEvent("V", "a", "revoked", 2_000)
    read = ActivationLog.read
    calls = []

    def read_then_race(self, *args) -> None:
        read(self, *args)
        calls.append(1)
        if len(calls) == 1:        # another producer revokes right after the first read
            write_raw(bootstrap, topic, [revocation])

    monkeypatch.setattr(ActivationLog, "read", read_then_race)
    report = publish_activations(bootstrap, topic, [ActivationEvent("V", "a", "approved", 1_000)],
                                 NOW)
    assert report.written == 2                        # the approval, then the revocation again
    assert [v["status"] for v in values(bootstrap, topic)] == ["revoked", "approved", "revoked"]
    assert last_records(bootstrap, topic) == {b"V/a": revocation}


def test_an_approval_dated_from_the_future_is_refused_and_nothing_is_written(
        kafka_service) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    with pytest.raises(ConfigError, match=r"approval of V for a is dated .* ahead of this "
                                          r"machine's clock"):
        publish_activations(bootstrap, topic, [ActivationEvent("W", "a", "approved", 1),
                                               ActivationEvent("V", "a", "approved", NOW + 301_000)],
                            NOW)
    assert values(bootstrap, topic) == []


def test_a_tombstone_forgets_its_pair_and_nothing_is_republished_over_it(kafka_service) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap)
    publish_activations(bootstrap, topic, [ActivationEvent("V", "a", "approved", 1_000)], NOW)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=b"V/a", value=None)
    producer.flush(10)
    assert publish_activations(bootstrap, topic, [], NOW).written == 0


events = st.builds(ActivationEvent, st.sampled_from(("V1", "V2")), st.sampled_from(("a", "b")),
                   st.sampled_from(ACTIVATION_STATUSES), st.integers(0, 4))
#: a history of steps: ("raw", events another producer writes blindly) or ("publish", events)
steps = st.lists(st.tuples(st.sampled_from(("raw", "publish")), st.lists(events, max_size=4)),
                 max_size=5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps, last=st.lists(events, max_size=4))
def test_after_any_history_each_key_s_last_record_is_the_winner_of_all_ever_written(
        kafka_service, history, last) -> None:
    bootstrap = kafka_service.bootstrap
    topic = fresh_topic(bootstrap, partitions=2)
    everything: list[ActivationEvent] = []
    for kind, batch in [*history, ("publish", last)]:
        (write_raw if kind == "raw" else
         lambda b, t, e: publish_activations(b, t, e, NOW))(bootstrap, topic, batch)
        everything += batch
    winners: dict[bytes, ActivationEvent] = {}
    for event in everything:
        key = activation_key(event)
        winners[key] = max(winners.get(key, event), event, key=rank)
    assert last_records(bootstrap, topic) == winners
