"""The streaming job on a real Flink cluster reading a real Kafka broker (all on loopback).

simulator -> Kafka -> `fleetstream stream` on Flink -> file sinks, dead-letter topic.
The expected outcome of every message is computed independently with the pure
mappers and permission rule, and compared with what the job delivered.
"""
from __future__ import annotations

import glob
import os
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Iterator

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from fleetstream.dev.flink import FlinkTaskManager
from fleetstream.io.archive.format import read_archive
from fleetstream.io.archive.layout import hour_folder
from fleetstream.io.archive.raw_archive import ArchiveSettings
from fleetstream.io.kafka.producer import produce_envelopes
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED, PARTIAL
from fleetstream.pipelines.stream import ensure_topics, submit_stream
from fleetstream.runtime import flink_jobs
from fleetstream.schemas.config import Config
from fleetstream.schemas.document import message_id
from fleetstream.schemas.envelope import source_message_id
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.settings.config import parse_config
from fleetstream.settings.stream import FlinkSettings, OrderSettings, StreamSettings
from fleetstream.simulator import SOURCES, fleet_vins, simulate_keyed
from fleetstream.transforms.permissions import permitted_data

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

VEHICLES = 12
APPS = ("fleet", "insurer")
SEED = 9
REVOCATION_LIMIT_S = 10.0
ARCHIVE_WINDOW_S = 10


class StreamEnv:
    """One streaming job and everything it reads and writes, isolated by a run id."""

    def __init__(self, bootstrap: str, cluster, out: Path, raw_reader: str = "kafkaio") -> None:
        run = uuid.uuid4().hex[:8]
        self.out = out
        self.raw_topics = {source: f"{run}.raw.{source}" for source in SOURCES}
        self.activations_topic = f"{run}.activations"
        self.dead_letters_topic = f"{run}.dead-letters"
        self.bootstrap = bootstrap
        self.vins = fleet_vins(VEHICLES, seed=SEED)
        self.config = parse_config({
            "applications": [
                {"id": "fleet", "permissions": ["diagnostics.*", "charging.*",
                                                "vehicle_location.*"],
                 "sink": {"type": "file", "path": str(out / "fleet"), "max_delay": 0.5}},
                {"id": "insurer", "permissions": ["diagnostics.odometer"],
                 "sink": {"type": "file", "path": str(out / "insurer"), "max_delay": 0.5}}],
            # every vehicle approved for both, but the last one only for the fleet
            "activations": [{"vin": vin, "application_id": app, "status": "approved", "at": 1}
                            for vin in self.vins for app in APPS
                            if not (vin == self.vins[-1] and app == "insurer")]})
        self.approved = {(e.vin, e.application_id) for e in self.config.activations}
        self.settings = StreamSettings(
            self.config,
            FlinkSettings(job_endpoint=cluster.job_endpoint,
                          environment_config=cluster.worker_pool, parallelism=2,
                          checkpointing_interval_ms=2000),
            KafkaSettings(bootstrap, f"test-{run}", "earliest", cluster.expansion_service,
                          raw_reader=raw_reader),
            self.raw_topics, self.activations_topic, self.dead_letters_topic, None,
            OrderSettings(reorder_window_s=0.5, dedupe_horizon_s=600), delivery_shards=2,
            archive=ArchiveSettings(str(out / "archive"), window_s=ARCHIVE_WINDOW_S))
        ensure_topics(self.settings)
        self.sent: list[dict] = []     # every envelope produced, with its produce time

    def submit(self, savepoint: str | None = None) -> str:
        """Submit the job (restored from `savepoint`); its id once it runs."""
        known = tuple(flink_jobs.running_jobs())
        submit_stream(self.settings.restored_from(savepoint) if savepoint else self.settings)
        return flink_jobs.wait_running(known=known)

    def produce(self, keyed: Iterable[tuple[str, dict]], messages_per_s: float | None = None
                ) -> None:
        """Produce envelopes, noting when each was sent."""
        def noted() -> Iterator[tuple[str, dict]]:
            for vin, envelope in keyed:
                self.sent.append({**envelope, "vin": vin, "at": time.time()})
                yield vin, envelope
        produce_envelopes(self.bootstrap, noted(), messages_per_s,
                          topic_of_source=self.raw_topics)

    def publish_activation(self, vin: str, app: str, status: str) -> float:
        at = time.time()
        producer = Producer({"bootstrap.servers": self.bootstrap})
        producer.produce(self.activations_topic, key=f"{vin}/{app}".encode(), value=orjson.dumps(
            {"vin": vin, "application_id": app, "status": status, "at": iso_ms(int(at * 1000))}))
        producer.flush(10)
        return at

    def documents(self) -> dict[str, list[dict]]:
        """Each application's delivered documents, in the order the files were written."""
        out = {}
        for app in APPS:
            paths = sorted(glob.glob(str(self.out / app / "*.jsonl")), key=os.path.getmtime)
            out[app] = [orjson.loads(line) for path in paths for line in open(path, "rb")]
        return out

    def dead_letters(self) -> list[dict]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": uuid.uuid4().hex,
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([self.dead_letters_topic])
        letters, quiet_since = [], time.monotonic()
        while time.monotonic() - quiet_since < 5:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                letters.append(orjson.loads(message.value()))
                quiet_since = time.monotonic()
        consumer.close()
        return letters


def expected(sent: Iterable[dict], approved: set[tuple[str, str]], config: Config,
             revoked: dict[tuple[str, str], float] | None = None) -> tuple[set, set]:
    """(application, message_id) documents and dead-letter ids the job must produce."""
    documents, dead = set(), set()
    seen: set[str] = set()
    permitted = {a.id: a.permitted for a in config.applications}
    for envelope in sent:
        payload = envelope["payload"].encode()
        smid = source_message_id(envelope["source"], payload)
        if smid in seen:
            continue  # an exact duplicate: dropped by OrderPerVehicle
        seen.add(smid)
        result = MAPPERS[envelope["source"]](payload, to_epoch_ms(envelope["received_at"]))
        if result.outcome in (FAILED, PARTIAL):
            dead.add(smid)
        if result.outcome in (FAILED, IGNORED):
            continue
        for app in APPS:
            cut = (revoked or {}).get((result.vin, app))
            if (result.vin, app) in approved and (cut is None or envelope["at"] < cut) \
                    and permitted_data(result.data, permitted[app]):
                documents.add((app, message_id(smid, app)))
    return documents, dead


def wait_for(condition, timeout_s: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(2)


def delivered_ids(env: StreamEnv) -> set[tuple[str, str]]:
    return {(app, d["message_id"]) for app, docs in env.documents().items() for d in docs}


def unread_partitions(env: StreamEnv) -> dict[str, tuple[int, int]]:
    """Raw partitions whose committed offset is short of their end: {topic[p]: (committed,
    end)}."""
    consumer = Consumer({"bootstrap.servers": env.bootstrap,
                         "group.id": env.settings.kafka.consumer_group})
    try:
        partitions = [TopicPartition(topic, p) for topic in env.raw_topics.values()
                      for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        short = {}
        for tp in consumer.committed(partitions, timeout=10):
            end = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if tp.offset < end:
                short[f"{tp.topic}[{tp.partition}]"] = (tp.offset, end)
        return short
    finally:
        consumer.close()


def missing(env: StreamEnv, documents: set[tuple[str, str]], what: str):
    """A wait_for description: how many of `documents` are still missing, the raw partitions
    not read to their end, and the job's state, restarts and last failure (Flink REST)."""
    def describe() -> str:
        lost = documents - delivered_ids(env)
        return (f"{what}: {len(lost)} of {len(documents)} missing, e.g. {sorted(lost)[:3]}; "
                f"partitions read short of their end (committed, end): "
                f"{unread_partitions(env)}; {flink_jobs.job_summary(env.job)}")
    return describe


def submitted(kafka, flink_cluster, out: Path, raw_reader: str) -> StreamEnv:
    """A job of the test's own (topics, consumer group, sinks) reading `kafka`, running."""
    stream = StreamEnv(kafka.bootstrap, flink_cluster, out, raw_reader)
    stream.raw_reader = raw_reader
    stream.kafka = kafka
    stream.job = stream.submit()
    return stream            # conftest cancels its job after the test


@pytest.fixture(params=["kafkaio", "python"])
def env(request, kafka_service, flink_cluster, tmp_path: Path) -> StreamEnv:
    """A job on the shared broker, with each raw-topic reader (kafka.raw_reader): any test
    runs alone, in any order."""
    return submitted(kafka_service, flink_cluster, tmp_path / "stream", request.param)


@pytest.fixture(params=["kafkaio", "python"])
def env_on_private_kafka(request, private_kafka, flink_cluster, tmp_path: Path) -> StreamEnv:
    """A job on a broker of the test's own, which the test may stop: the shared one stays up
    for every other test (and its restart does not wait on the partitions of a whole suite)."""
    return submitted(private_kafka, flink_cluster, tmp_path / "stream", request.param)


def test_every_message_is_accounted_for_in_per_vehicle_order(env: StreamEnv) -> None:
    env.produce(simulate_keyed(VEHICLES, messages=300, rate=1.0, seed=SEED, error_rate=0.05,
                               duplicate_rate=0.02, start_ms=int(time.time() * 1000)))
    documents, dead = expected(env.sent, env.approved, env.config)
    wait_for(lambda: documents <= delivered_ids(env),
             what=missing(env, documents, "the documents"))
    assert delivered_ids(env) == documents            # nothing lost, nothing unexpected
    letters = env.dead_letters()
    assert {d["message_id"] for d in letters if d["stage"] == "map"} == dead
    assert all(d["payload"] for d in letters)
    # The insurer never sees the vehicle it is not approved for, nor unpermitted properties.
    docs = env.documents()
    assert env.vins[-1] not in {d["vin"] for d in docs["insurer"]}
    assert all(set(d["data"]) == {"diagnostics"} and set(d["data"]["diagnostics"]) ==
               {"odometer"} for d in docs["insurer"])
    for app, app_docs in docs.items():
        newest: dict[str, int] = defaultdict(int)
        for document in app_docs:
            stamp = max(to_epoch_ms(e["timestamp"]) for props in document["data"].values()
                        for entries in props.values() for e in entries)
            if not document.get("late"):
                assert stamp >= newest[document["vin"]], (app, document["vin"])
                newest[document["vin"]] = stamp


def test_a_revocation_stops_delivery_within_ten_seconds(env: StreamEnv) -> None:
    vin = env.vins[0]
    revoked_at = env.publish_activation(vin, "fleet", "revoked")
    one_vehicle = (kv for kv in simulate_keyed(VEHICLES, duration_s=3600, rate=1.0, seed=SEED,
                                                error_rate=0, duplicate_rate=0,
                                                start_ms=int(time.time() * 1000))
                   if kv[0] == vin)
    before = len(env.sent)
    env.produce((next(one_vehicle) for _ in range(32)), messages_per_s=2)   # 16 s of messages
    after_revocation = env.sent[before:]
    insurer_ids = {message_id(source_message_id(e["source"], e["payload"].encode()), "insurer")
                   for e in after_revocation}
    wait_for(lambda: insurer_ids <= {i for a, i in delivered_ids(env) if a == "insurer"},
             what="the insurer's documents after the revocation")
    fleet_ids = {i for a, i in delivered_ids(env) if a == "fleet"}
    delivered_at = [e["at"] for e in after_revocation
                    if message_id(source_message_id(e["source"], e["payload"].encode()),
                                  "fleet") in fleet_ids]
    lag = max(delivered_at, default=revoked_at) - revoked_at
    assert lag <= REVOCATION_LIMIT_S, f"fleet still received {vin} {lag:.1f} s after revocation"
    late_messages = [e for e in after_revocation if e["at"] > revoked_at + REVOCATION_LIMIT_S]
    assert late_messages, "the test must produce messages past the limit"
    print(f"revocation took effect within {lag:.1f} s")


def test_a_job_stopped_with_a_savepoint_and_restored_loses_nothing(env: StreamEnv,
                                                                   tmp_path: Path) -> None:
    # Traffic before the stop: some of it is still in the job's state when it stops.
    env.produce(simulate_keyed(VEHICLES, messages=60, rate=1.0, seed=SEED, error_rate=0.05,
                               start_ms=int(time.time() * 1000)))
    savepoint = flink_jobs.stop_with_savepoint(env.job, str(tmp_path / "savepoints"))
    # Traffic while the job is down.
    env.produce(simulate_keyed(VEHICLES, messages=120, rate=1.0, seed=SEED, error_rate=0.05,
                               start_ms=int(time.time() * 1000) + 3_600_000))
    env.job = env.submit(savepoint=savepoint)
    documents, _ = expected(env.sent, env.approved, env.config)
    wait_for(lambda: documents <= delivered_ids(env),
             what=missing(env, documents, "documents after the restore"))
    assert delivered_ids(env) == documents                 # nothing lost, nothing unexpected
    docs = env.documents()
    by_id: dict[tuple[str, str], bytes] = {}
    for app, app_docs in docs.items():
        for document in app_docs:
            key = (app, document["message_id"])
            body = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
            # a document delivered twice is the same document with the same id
            assert by_id.setdefault(key, body) == body


def test_a_kafka_broker_restart_mid_stream_loses_nothing(
        env_on_private_kafka: StreamEnv) -> None:
    """On a broker of the test's own: restarting the shared one made every later test wait,
    and after a whole suite (some 16,000 partitions) it did not come back within 248 s.
    The job is warmed up first, so that the restart hits it mid-stream."""
    env = env_on_private_kafka
    warm_up(env)
    env.produce(simulate_keyed(VEHICLES, messages=60, rate=1.0, seed=SEED,
                               start_ms=int(time.time() * 1000)))
    env.kafka.stop()
    time.sleep(5)
    env.kafka.start()
    env.produce(simulate_keyed(VEHICLES, messages=60, rate=1.0, seed=SEED,
                               start_ms=int(time.time() * 1000) + 3_600_000))
    documents, _ = expected(env.sent, env.approved, env.config)
    wait_for(lambda: documents <= delivered_ids(env), timeout_s=300,
             what=missing(env, documents, "documents after the broker restart"))


def archived(root: Path) -> Counter:
    """(source, payload) of every envelope in the archive under `root`, checking its folder."""
    found: Counter = Counter()
    for path in glob.glob(str(root / "raw" / "**" / "*.jsonl.gz"), recursive=True):
        with open(path, "rb") as stream:
            for envelope in read_archive(stream, path):
                assert os.path.dirname(path) == hour_folder(
                    str(root), envelope.source, envelope.received_at_ms), path
                found[envelope.source, envelope.payload] += 1
    return found


def test_the_raw_archive_holds_every_envelope_produced(env: StreamEnv) -> None:
    env.produce(simulate_keyed(VEHICLES, messages=120, rate=1.0, seed=SEED, error_rate=0.05,
                               duplicate_rate=0.02, start_ms=int(time.time() * 1000)))
    sent = Counter((e["source"], e["payload"].encode()) for e in env.sent)
    wait_for(lambda: not sent - archived(env.out / "archive"), timeout_s=120,
             what="every produced envelope in the raw archive")
    copies = archived(env.out / "archive") - sent
    print(f"archive: {sum(sent.values())} envelopes produced, {sum(copies.values())} archived "
          f"twice")


def warm_up(env: StreamEnv) -> None:
    """Some traffic through every step of the job, delivered (its threads and state exist)."""
    env.produce(simulate_keyed(VEHICLES, messages=24, rate=1.0, seed=SEED + 2, error_rate=0,
                               duplicate_rate=0, start_ms=int(time.time() * 1000)))
    documents, _ = expected(env.sent, env.approved, env.config)
    wait_for(lambda: documents <= delivered_ids(env), what=missing(env, documents, "warm-up"))


def test_the_taskmanager_does_not_gain_a_thread_per_bundle(env: StreamEnv) -> None:
    """With `data_buffer_time_limit_ms`, Beam 2.62's runner left an idle thread in the
    TaskManager for every bundle: thousands within minutes, a crash within hours (mended by
    fleetstream.runtime.beam_patch)."""
    warm_up(env)
    tasks = Path(f"/proc/{FlinkTaskManager().pid()}/task")
    before = len(list(tasks.iterdir()))
    env.produce(simulate_keyed(VEHICLES, messages=60, rate=1.0, seed=SEED + 1, error_rate=0,
                               duplicate_rate=0, start_ms=int(time.time() * 1000)),
                messages_per_s=4)                 # 15 s of bundles in every step
    after = len(list(tasks.iterdir()))
    print(f"{env.raw_reader}: TaskManager threads {before} -> {after}")
    assert after - before < 100, (before, after)


def test_checkpoints_of_an_idle_job_do_not_grow(env: StreamEnv) -> None:
    """The Python reader hands each partition back to Flink many times a second; Beam 2.62
    kept a new keyed state for each of those until the TaskManager ran out of memory
    (apache/beam#27648, mended by fleetstream.runtime.beam_patch)."""
    warm_up(env)
    time.sleep(5)               # a checkpoint or two after the last of it
    before = flink_jobs.completed_checkpoints(env.job)[-1]["state_size"]
    time.sleep(30)              # 15 checkpoints, hundreds of polls of idle partitions
    checkpoints = flink_jobs.completed_checkpoints(env.job)
    after = checkpoints[-1]["state_size"]
    assert [c["id"] for c in checkpoints] == sorted(c["id"] for c in checkpoints)
    assert checkpoints[-1]["trigger_timestamp"] / 1000 > time.time() - 30
    print(f"{env.raw_reader}: checkpoint {before:,} -> {after:,} bytes in 30 s")
    assert after <= before * 1.1 + 10_000, (before, after)
