"""Reprocessing from Kafka: a streaming job started from a time reads only what came after it.

Each test has a job of its own (tests/conftest.py frees the task slots around it); the
helpers are test_stream_flink's.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from fleetstream.io.kafka.activations import publish_activations
from fleetstream.schemas.activations import ActivationEvent
from fleetstream.simulator import simulate_keyed
from tests.test_stream_flink import SEED, VEHICLES, StreamEnv, delivered_ids, expected, wait_for

pytest_plugins = ["fleetstream.dev.pytest_plugin"]


def test_a_job_started_from_a_time_reads_only_records_from_then_on(
        kafka_service, flink_cluster, tmp_path: Path) -> None:
    fresh = StreamEnv(kafka_service.bootstrap, flink_cluster, tmp_path)
    fresh.produce(simulate_keyed(VEHICLES, messages=60, rate=1.0, seed=SEED,
                                 start_ms=int(time.time() * 1000)))
    time.sleep(2)
    start_ms = int(time.time() * 1000)
    time.sleep(1)
    before = len(fresh.sent)
    fresh.produce(simulate_keyed(VEHICLES, messages=60, rate=1.0, seed=SEED,   # other payloads
                                 start_ms=int(time.time() * 1000) + 3_600_000))
    fresh.settings = dataclasses.replace(fresh.settings, kafka=dataclasses.replace(
        fresh.settings.kafka, start=start_ms))
    fresh.submit()
    documents, _ = expected(fresh.sent[before:], fresh.approved, fresh.config)
    earlier, _ = expected(fresh.sent[:before], fresh.approved, fresh.config)
    assert documents and earlier
    wait_for(lambda: documents <= delivered_ids(fresh),
             what=lambda: f"the documents after the start "
                          f"({len(documents & delivered_ids(fresh))} of {len(documents)} "
                          f"delivered)")
    time.sleep(5)
    assert delivered_ids(fresh) == documents      # nothing from before the start time


def test_a_cold_start_behind_a_long_activations_topic_filters_nothing(
        kafka_service, flink_cluster, tmp_path: Path) -> None:
    """The raw backlog is read long before the vehicles' approvals (after 3,000 others)."""
    fresh = StreamEnv(kafka_service.bootstrap, flink_cluster, tmp_path)
    publish_activations(kafka_service.bootstrap, fresh.activations_topic, (
        ActivationEvent(f"PADDING{i:010d}", "fleet", "approved", 1)
        for i in range(3_000)))
    fresh.produce(simulate_keyed(VEHICLES, messages=60, rate=1.0, seed=SEED,
                                 start_ms=int(time.time() * 1000)))
    fresh.submit()            # publishes the vehicles' approvals after the 3,000
    documents, _ = expected(fresh.sent, fresh.approved, fresh.config)
    wait_for(lambda: documents <= delivered_ids(fresh),
             what=lambda: f"the backlog's documents "
                          f"({len(documents & delivered_ids(fresh))} of {len(documents)} "
                          f"delivered)")
    assert delivered_ids(fresh) == documents
