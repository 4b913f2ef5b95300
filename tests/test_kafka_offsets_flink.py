"""The streaming job commits the raw topics' offsets to its consumer group on each checkpoint.

A job started afresh (no savepoint) with the same consumer group then resumes where the
last checkpoint of the previous one left off instead of re-reading from `kafka.start`;
the activations topic is never committed (each job reads it whole).
"""
from __future__ import annotations

import time
import uuid
from typing import Iterator

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from fleetstream.io.kafka.producer import produce_envelopes
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.pipelines.stream import ensure_topics, submit_stream
from fleetstream.runtime import flink_jobs
from fleetstream.settings.config import parse_config
from fleetstream.settings.stream import FlinkSettings, OrderSettings, StreamSettings
from fleetstream.simulator import SOURCES, fleet_vins, simulate_keyed

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

VEHICLES = 6
SEED = 5
PARTITIONS = 4  # ensure_topics creates raw topics with 4 partitions


def _settings(bootstrap: str, cluster, run: str, out: str, raw_reader: str) -> StreamSettings:
    config = parse_config({
        "applications": [{"id": "fleet", "permissions": ["diagnostics.*", "charging.*",
                                                         "vehicle_location.*", "doors.*"],
                          "sink": {"type": "file", "path": out, "max_delay": 0.5}}],
        "activations": [{"vin": vin, "application_id": "fleet", "status": "approved", "at": 1}
                        for vin in fleet_vins(VEHICLES, seed=SEED)]})
    return StreamSettings(
        config,
        FlinkSettings(job_endpoint=cluster.job_endpoint, environment_config=cluster.worker_pool,
                      parallelism=2, checkpointing_interval_ms=2000),
        KafkaSettings(bootstrap, f"offsets-{run}", "earliest", cluster.expansion_service,
                      raw_reader=raw_reader),
        {source: f"{run}.raw.{source}" for source in SOURCES}, f"{run}.activations",
        f"{run}.dead-letters", f"{run}.delivered", OrderSettings(0.2, 600))


def _committed(consumer: Consumer, topics) -> int:
    partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))


def _ends(consumer: Consumer, topics) -> int:
    return sum(consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
               for t in topics for p in range(PARTITIONS))


def _delivered_ids(bootstrap: str, topic: str, quiet_s: float = 8, timeout_s: float = 180
                   ) -> list[str]:
    """Every document's message_id on the topic, once nothing new came for `quiet_s`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    ids: list[str] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline and (not ids or time.monotonic() - last_new < quiet_s):
            for message in consumer.consume(1000, timeout=1.0):
                if not message.error():
                    ids.append(orjson.loads(message.value())["message_id"])
                    last_new = time.monotonic()
    finally:
        consumer.close()
    return ids


@pytest.fixture(params=["kafkaio", "python"])
def job_settings(request, kafka_service, flink_cluster, tmp_path) -> Iterator[StreamSettings]:
    """Settings of a job on fresh topics, once with each raw-topic reader."""
    run = uuid.uuid4().hex[:8]
    settings = _settings("127.0.0.1:9092", flink_cluster, run, str(tmp_path / "fleet"),
                         request.param)
    ensure_topics(settings)
    yield settings


def _produce(settings: StreamSettings, messages: int) -> None:
    """Messages of the approved vehicles (the seed picks the VINs; the start time varies)."""
    produce_envelopes("127.0.0.1:9092",
                      simulate_keyed(VEHICLES, messages=messages, seed=SEED, error_rate=0,
                                     duplicate_rate=0, start_ms=int(time.time() * 1000)),
                      None, topic_of_source=settings.raw_topics)


def _warm_up(settings: StreamSettings, timeout_s: float = 180) -> None:
    """Produce a few messages until a document comes out: the job has read the activations
    (a message the keyed join sees before its vehicle's approval is filtered)."""
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092",
                         "group.id": f"warm-{uuid.uuid4()}", "auto.offset.reset": "latest"})
    consumer.subscribe([settings.delivered_topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            _produce(settings, 5)
            if any(not m.error() for m in consumer.consume(100, timeout=5.0)):
                return
        raise AssertionError("no document came out of the job")
    finally:
        consumer.close()


def _wait_committed(probe: Consumer, topics, timeout_s: float = 180) -> int:
    deadline = time.monotonic() + timeout_s
    while _committed(probe, topics) < _ends(probe, topics) and time.monotonic() < deadline:
        time.sleep(2)
    return _committed(probe, topics)


def test_offsets_are_committed_on_checkpoints_and_a_fresh_job_resumes_from_them(
        job_settings: StreamSettings) -> None:
    settings = job_settings
    raw = list(settings.raw_topics.values())
    probe = Consumer({"bootstrap.servers": "127.0.0.1:9092",
                      "group.id": settings.kafka.consumer_group})
    activations_probe = Consumer({"bootstrap.servers": "127.0.0.1:9092",
                                  "group.id": settings.kafka.consumer_group + "-activations"})
    known = tuple(flink_jobs.running_jobs())
    submit_stream(settings)
    job = flink_jobs.wait_running(known=known)
    try:
        _warm_up(settings)
        _produce(settings, 200)
        # every record read is committed once a checkpoint after it completed
        assert _wait_committed(probe, raw) == _ends(probe, raw) >= 200
        assert _committed(activations_probe, [settings.activations_topic]) == 0
        first_documents = len(_delivered_ids("127.0.0.1:9092", settings.delivered_topic))
        assert first_documents >= 200
        assert not flink_jobs_restarts(job), "committing offsets must not restart the job"
    finally:
        flink_jobs.cancel(job)
    first_end = _ends(probe, raw)
    # a fresh job (no savepoint, same group, start=earliest) reads only what came after
    known = tuple(flink_jobs.running_jobs())
    submit_stream(settings)
    job = flink_jobs.wait_running(known=known)
    try:
        _produce(settings, 60)
        assert _wait_committed(probe, raw) == _ends(probe, raw) == first_end + 60
        new_documents = len(_delivered_ids("127.0.0.1:9092", settings.delivered_topic)
                            ) - first_documents
    finally:
        flink_jobs.cancel(job)
        probe.close()
        activations_probe.close()
    # one document per message at most: the 60 new ones, not the first 200 again
    assert 0 < new_documents <= 60, f"the fresh job delivered {new_documents} documents"


def flink_jobs_restarts(job: str) -> int:
    """How many times Flink restarted `job` (its exception history)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://localhost:8081/jobs/{job}/exceptions") as response:
        history = json.load(response).get("exceptionHistory", {})
    return len(history.get("entries", []))
