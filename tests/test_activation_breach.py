"""A revoked vehicle stays revoked across redeploys, savepoint restores and Kafka's compaction.

The breach this guards against: every `fleetstream stream` submit published the
configuration's activation events, with their old `at`, to the compacted
`activations` topic. Compaction keeps the *last record by offset* of each key,
the job keeps the *newest `at`*: once the cleaner had run, a cold start read
only the stale approval and delivered a revoked vehicle's data again.

Sequence (on the real broker and cluster, the activations topic set to compact
within seconds): submit; revoke V1 for `fleet` while the job runs; stop with a
savepoint; revoke V2 for `insurer` while the job is down; restore from that
(now old) savepoint, which submits again; traffic; cancel; wait until the
cleaner has compacted the topic; cold start (new consumer group, from the
earliest offsets); traffic. Neither revoked pair may receive a single
document, and every pair still approved must receive all of its own.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from fleetstream.io.kafka.producer import mark_partitions
from fleetstream.io.kafka.topic_reader import read_records
from fleetstream.runtime import flink_jobs
from fleetstream.simulator import simulate_keyed
from tests.test_stream_flink import SEED, VEHICLES, StreamEnv, delivered_ids, expected, wait_for

pytest_plugins = ["fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

#: topic settings that let the log cleaner compact a segment seconds after it is written
FAST_COMPACTION = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
                   "min.compaction.lag.ms": "0", "delete.retention.ms": "100"}


def compact_quickly(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in FAST_COMPACTION.items()])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def records_per_key(bootstrap: str, topic: str) -> Counter:
    return Counter(record.key() for record in read_records(bootstrap, topic))


def wait_until_compacted(bootstrap: str, topic: str, keys: list[bytes],
                         timeout_s: float = 180.0) -> None:
    """Until each of `keys` has one record left; a read mark a second rolls the segment
    (a segment is cleaned only once closed, and it closes when a record comes later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = records_per_key(bootstrap, topic)
        if all(counts[key] == 1 for key in keys):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic} not compacted within {timeout_s:.0f} s: "
                                 f"{ {k: counts[k] for k in keys} }")
        mark_partitions(bootstrap, topic)
        time.sleep(1)


def traffic(env: StreamEnv, hour: int) -> None:
    env.produce(simulate_keyed(VEHICLES, messages=48, rate=1.0, seed=SEED, error_rate=0,
                               duplicate_rate=0,
                               start_ms=int(time.time() * 1000) + hour * 3_600_000))


def test_a_revocation_survives_restore_redeploy_compaction_and_cold_start(
        kafka_service, flink_cluster, tmp_path: Path) -> None:
    env = StreamEnv(kafka_service.bootstrap, flink_cluster, tmp_path)
    topic, bootstrap = env.activations_topic, env.bootstrap
    compact_quickly(bootstrap, topic)
    v1, v2 = env.vins[0], env.vins[1]
    env.job = env.submit()
    env.publish_activation(v1, "fleet", "revoked")             # live, while the job runs
    savepoint = flink_jobs.stop_with_savepoint(env.job, str(tmp_path / "savepoints"))
    env.publish_activation(v2, "insurer", "revoked")           # while the job is down
    env.job = env.submit(savepoint=savepoint)                  # an old savepoint; submits again
    still_approved = env.approved - {(v1, "fleet"), (v2, "insurer")}
    try:
        traffic(env, hour=0)
        documents, _ = expected(env.sent, still_approved, env.config)
        wait_for(lambda: documents <= delivered_ids(env), what="the restored job's documents")
    finally:
        flink_jobs.cancel(env.job)
    wait_until_compacted(bootstrap, topic, [f"{v1}/fleet".encode(), f"{v2}/insurer".encode()])
    env.settings = dataclasses.replace(env.settings, kafka=dataclasses.replace(
        env.settings.kafka, consumer_group=f"cold-{uuid.uuid4().hex[:8]}", start="earliest"))
    env.job = env.submit()                                     # cold start: new group
    try:
        traffic(env, hour=1)
        documents, _ = expected(env.sent, still_approved, env.config)
        wait_for(lambda: documents <= delivered_ids(env), what="the cold start's documents")
        time.sleep(3)
    finally:
        flink_jobs.cancel(env.job)
    docs = env.documents()
    assert [d for d in docs["fleet"] if d["vin"] == v1] == [], "fleet received revoked V1"
    assert [d for d in docs["insurer"] if d["vin"] == v2] == [], "insurer received revoked V2"
    assert documents <= delivered_ids(env)
    assert {d["vin"] for d in docs["fleet"]} >= {v2}
    assert {d["vin"] for d in docs["insurer"]} >= {v1}
