"""A bounded stage whose bundle a checkpoint closes still hands its output on
(`fleetstream.runtime.checkpoint_buffer`), on the local Flink cluster.

In the first test the job's first stage is slow (its bundle takes SLOW_S) and a checkpoint
comes every 300 ms, so a barrier waits behind that bundle and reaches the next stage right
after the elements and the Impulse's final watermark. That stage's bundle is then closed by
the checkpoint. Without the option its output stays in Beam's snapshot buffer and the file
is never written (3 of 3 runs). The second test is the case that was seen: the Python Kafka
reader's partitions.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import apache_beam as beam
from confluent_kafka import Producer

from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.partition_reader import ReadKafkaPartitions
from fleetstream.runtime import flink_jobs
from fleetstream.runtime.checkpoint_buffer import FINISH_BUNDLE_BEFORE_CHECKPOINTING
from fleetstream.settings.stream import FlinkSettings

if TYPE_CHECKING:  # the plugin module is imported by pytest itself
    from fleetstream.dev.kafka import Kafka
    from fleetstream.dev.pytest_plugin import LocalFlink

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

SLOW_S = 4.0
#: what a job is given to write its files: a stranded output never comes
DELIVERY_TIMEOUT_S = 90.0


def _slowly(element: str) -> str:
    time.sleep(SLOW_S)
    return element


def _written(element: str, folder: str) -> None:
    (Path(folder) / element).write_text(element)


def _records_written(poll: list[tuple[str, int, bytes]], folder: str) -> None:
    for _topic, _timestamp, value in poll:
        _written(value.decode(), folder)


def _run(flink_cluster: LocalFlink, checkpointing_interval_ms: int, parallelism: int,
         build: Callable[[beam.Pipeline], object]) -> str:
    """Start a streaming job that `build(pipeline)` makes; its Flink job id once it runs."""
    options = FlinkSettings(job_endpoint=flink_cluster.job_endpoint,
                            environment_config=flink_cluster.worker_pool,
                            parallelism=parallelism,
                            checkpointing_interval_ms=checkpointing_interval_ms
                            ).pipeline_options()
    assert options.get_all_options(retain_unknown_options=True)[
        FINISH_BUNDLE_BEFORE_CHECKPOINTING.removeprefix("--")]
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    known = tuple(flink_jobs.running_jobs(flink_cluster.flink_rest))
    pipeline.run()
    return flink_jobs.wait_running(flink_cluster.flink_rest, known=known)


def _files_within(folder: Path, count: int, timeout_s: float) -> int:
    """How many files `folder` holds once it holds `count`, or when `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while len(list(folder.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return len(list(folder.iterdir()))


def test_a_stage_whose_bundle_a_checkpoint_closes_hands_its_output_on(
        flink_cluster: LocalFlink, tmp_path: Path) -> None:
    job = _run(flink_cluster, 300, 1, lambda pipeline: (
        pipeline
        | beam.Create(["handed-on"])
        | "Slow" >> beam.Map(_slowly)
        | "ToBoundedStage" >> beam.Reshuffle()
        | "BoundedStage" >> beam.Map(str.upper)
        | "ToWriter" >> beam.Reshuffle()
        | "Write" >> beam.Map(_written, str(tmp_path))))
    written = _files_within(tmp_path, 1, DELIVERY_TIMEOUT_S)
    checkpoints = flink_jobs.completed_checkpoints(job, flink_cluster.flink_rest)
    assert written == 1, (f"nothing written in {DELIVERY_TIMEOUT_S:.0f} s; "
                          f"{len(checkpoints)} checkpoints completed meanwhile")
    assert checkpoints, "no checkpoint completed: the test did not test the buffer"


def test_a_python_reader_job_checkpointing_often_reads_every_partition(
        kafka_service: Kafka, flink_cluster: LocalFlink, tmp_path: Path) -> None:
    """Without the option, 7 of 10 such jobs never read a record (docs/runtime.md)."""
    topic = f"checkpoint-buffer.{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic, partitions=16)])
    producer = Producer({"bootstrap.servers": kafka_service.bootstrap})
    for i in range(32):
        producer.produce(topic, value=f"record-{i}".encode(), partition=i % 16)
    assert producer.flush(30) == 0
    _run(flink_cluster, 200, 2, lambda pipeline: (
        pipeline
        | ReadKafkaPartitions(kafka_service.bootstrap, [topic], f"group-{topic}")
        | beam.Map(_records_written, str(tmp_path))))
    assert _files_within(tmp_path, 32, DELIVERY_TIMEOUT_S) == 32
