"""Counting per list or bundle gives every counter the totals one add per message gave.

The replay counts a vehicle's messages (`vehicle_documents`), a bundle's mapping outcomes
(`outcome_counts`) and a batch's delivery latencies (`latency_counts`) once per counter
name; these properties hold that to the per-message rule.
"""
from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from fleetstream.mappers.base import FAILED, IGNORED, OK, PARTIAL
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.schemas.metrics import LATENCY_BUCKETS_MS, latency_bucket, latency_counts
from fleetstream.settings.config import parse_config
from fleetstream.transforms.map_to_autoapi import outcome_counts
from fleetstream.transforms.permissions import (application_rules, documents, permitted_data,
                                                prepare_data, vehicle_documents)

ENTRY = [{"data": 1, "timestamp": "2026-01-01T00:00:00.000Z"}]
PROPERTIES = [("diagnostics", "odometer"), ("diagnostics", "speed"),
              ("charging", "battery_level"), ("doors", "locks_state")]
APPLICATIONS = application_rules(parse_config({"applications": [
    {"id": "fleet", "permissions": ["diagnostics.*", "charging.battery_level"],
     "sink": {"type": "file", "path": "unused"}},
    {"id": "insurer", "permissions": ["diagnostics.odometer"],
     "sink": {"type": "file", "path": "unused"}},
    {"id": "locks", "permissions": ["doors.*"], "sink": {"type": "file", "path": "unused"}},
]}).applications)
IDS = [a.id for a in APPLICATIONS]


class Totals:
    """A BundleCounts stand-in that keeps each name's total."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        assert amount > 0, f"{name} added {amount}"
        self.totals[name] += amount


def _data(properties: list[tuple[str, str]]) -> dict:
    data: dict = {}
    for capability, name in properties:
        data.setdefault(capability, {})[name] = ENTRY
    return data


messages = st.lists(st.tuples(
    st.sampled_from(["tesla", "bmw", "smartcar"]),
    st.lists(st.sampled_from(PROPERTIES), max_size=4),
    st.booleans()), max_size=12)


@given(messages, st.sets(st.sampled_from(IDS)), st.booleans())
def test_a_vehicles_documents_and_counts_are_those_of_its_messages_one_by_one(
        given_messages: list, approved: set[str], prepared: bool) -> None:
    run = [MappedMessage(source, f"m{i}", 1_000 + i, 2_000 + i, _data(properties), late)
           for i, (source, properties, late) in enumerate(given_messages)]
    if prepared:
        run = [m._replace(data=prepare_data(m.data, APPLICATIONS)) for m in run]
    one_by_one, per_message = [], Totals()
    for message in run:
        one_by_one.extend(documents("VIN1", message, approved, APPLICATIONS, per_message))
    per_list = Totals()
    assert vehicle_documents("VIN1", run, approved, APPLICATIONS, per_list) == one_by_one
    assert per_list.totals == per_message.totals
    # and the totals are the rule's: an application gets a document of a message when it is
    # approved and may see one of its properties, else the message is filtered for it
    for app in APPLICATIONS:
        seen = sum(1 for _, properties, _ in given_messages
                   if app.id in approved and permitted_data(_data(properties), app.permitted))
        assert per_list.totals[f"app/{app.id}.delivered"] == seen
        assert per_list.totals[f"app/{app.id}.filtered"] == len(run) - seen
    assert sum(n for name, n in per_list.totals.items() if not name.startswith("app/")) \
        == len(run)


@given(st.lists(st.tuples(st.sampled_from(["tesla", "bmw", "unknown"]),
                          st.sampled_from([OK, PARTIAL, FAILED, IGNORED]))))
def test_outcome_counts_are_the_per_message_counts(outcomes: list[tuple[str, str]]) -> None:
    per_message: Counter[str] = Counter()
    for source, outcome in outcomes:
        per_message[f"{source}.read"] += 1
        per_message[f"{source}.{outcome}"] += 1
    assert outcome_counts(Counter(outcomes)) == dict(per_message)


@given(st.integers(0, 10 ** 13), st.lists(st.one_of(
    st.integers(-10 ** 6, 10 ** 13), st.sampled_from(LATENCY_BUCKETS_MS))))
def test_latency_counts_are_the_per_document_buckets_and_sum(now_ms: int,
                                                             latencies: list[int]) -> None:
    received = [now_ms - latency for latency in latencies]   # some ahead of now: latency 0
    per_document: Counter[str] = Counter(latency_bucket(max(0, now_ms - r)) for r in received)
    buckets, total = latency_counts(now_ms, received)
    assert buckets == dict(per_document)
    assert total == sum(max(0, now_ms - r) for r in received)
