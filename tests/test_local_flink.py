"""Beam pipelines on the local Flink cluster through the job server (PortableRunner)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Producer

from fleetstream.io.kafka.admin import Topic, create_topics

if TYPE_CHECKING:  # the plugin module is imported by pytest itself
    from fleetstream.dev.kafka import Kafka
    from fleetstream.dev.pytest_plugin import LocalFlink

pytest_plugins = ["fleetstream.dev.pytest_plugin"]


def test_pipeline_writes_a_file_on_flink(flink_cluster: LocalFlink, tmp_path: Path) -> None:
    output = tmp_path / "words.txt"
    flink_cluster.run_module("fleetstream.dev.smoke", ["text", str(output)])
    assert output.read_text().splitlines() == ["FLEET", "STREAM", "FLINK"]


def test_read_from_kafka_on_flink(kafka_service: Kafka, flink_cluster: LocalFlink,
                                  tmp_path: Path) -> None:
    topic = f"test.beam-read.{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic, partitions=2)])
    producer = Producer({"bootstrap.servers": kafka_service.bootstrap})
    sent = {f"vin-{i}": f"payload-{i}" for i in range(6)}
    for key, value in sent.items():
        producer.produce(topic, key=key.encode(), value=value.encode())
    assert producer.flush(30) == 0

    output = tmp_path / "records.txt"
    flink_cluster.run_module("fleetstream.dev.smoke",
                             ["kafka", str(output), topic, str(len(sent))])
    lines = output.read_text().splitlines()
    assert sorted(lines) == sorted(f"{key}={value}" for key, value in sent.items())


def test_a_starting_process_removes_only_its_kind_of_stale_working_dirs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped TaskManager leaves its folder (cached job jars, GBs) in Flink's tmp folder;
    the next TaskManager deletes those, and leaves the JobManager's alone."""
    from fleetstream.dev.flink import FlinkTaskManager

    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path))
    flink_tmp = tmp_path / "data" / "flink" / "tmp"
    for name in ("tm_127.0.0.1:6122-aaaaaa", "tm_127.0.0.1:6122-bbbbbb", "jm_cccccc"):
        (flink_tmp / name / "blobStorage").mkdir(parents=True)
        (flink_tmp / name / "blobStorage" / "job.jar").write_bytes(b"jar")
    FlinkTaskManager().remove_stale_working_dirs("tm")
    assert sorted(p.name for p in flink_tmp.iterdir()) == ["jm_cccccc"]


def test_a_starting_jobmanager_keeps_only_the_newest_jobs_retained_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetstream.dev.flink import FlinkJobManager

    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path))
    checkpoints = tmp_path / "data" / "flink" / "checkpoints"
    for age in range(5):                       # job-0 is the newest
        job = checkpoints / f"job-{age}"
        (job / "chk-7").mkdir(parents=True)
        os.utime(job, (1_000_000 - age, 1_000_000 - age))
    FlinkJobManager().prune_retained_checkpoints(keep=3)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["job-0", "job-1", "job-2"]
