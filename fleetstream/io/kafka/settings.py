"""How the streaming job reaches Kafka (`kafka:` in flink-runner.yaml): `KafkaSettings`.

The bootstrap servers, consumer group, where to start, the expansion service
(the Java side of KafkaIO) and what reads the raw topics (`raw_reader`: KafkaIO,
or `ReadKafkaPartitions` in the Python workers); `read` builds KafkaIO's read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from apache_beam.io.kafka import ReadFromKafka


@dataclass(frozen=True)
class KafkaSettings:
    """How the job reaches Kafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    consumer_group: str = "fleetstream"
    #: where a job that is not restored from a savepoint starts: "earliest" or
    #: "latest" where the group has no committed offset; an epoch-ms receive time
    #: moves the group's offsets there before the job is submitted (`submit_stream`)
    start: str | int = "earliest"
    expansion_service: str = "localhost:8088"
    #: commit the raw topics' offsets to the consumer group when a checkpoint completes
    commit_offsets: bool = True
    #: what reads the raw topics: "kafkaio" (Beam's KafkaIO, which hands records to the
    #: Python workers one at a time) or "python" (`ReadKafkaPartitions`: Python consumers,
    #: a poll's records cross as one element; docs/benchmarks.md compares them)
    raw_reader: str = "kafkaio"

    def reset(self) -> str:
        """Where a partition without a committed offset starts: earliest or latest."""
        return "latest" if self.start == "latest" else "earliest"

    def consumer_config(self, group_suffix: str = "", reset: str | None = None
                        ) -> dict[str, str]:
        reset = reset or self.reset()
        return {"bootstrap.servers": self.bootstrap_servers,
                "group.id": self.consumer_group + group_suffix,
                "auto.offset.reset": reset, "enable.auto.commit": "false"}

    def read(self, topics: Iterable[str], group_suffix: str = "",
             commit_offsets: bool = False, reset: str | None = None,
             record_time: bool = False) -> ReadFromKafka:
        """KafkaIO's read from the group's committed offsets (else `reset`, else `start`);
        `commit_offsets` commits read positions on completed checkpoints. Element
        timestamps are the read time, or with `record_time` the record timestamps (the
        watermark then waits for every partition to be read to its end)."""
        return ReadFromKafka(
            consumer_config=self.consumer_config(group_suffix, reset), topics=sorted(topics),
            with_metadata=True, commit_offset_in_finalize=commit_offsets,
            timestamp_policy=(ReadFromKafka.create_time_policy if record_time
                              else ReadFromKafka.processing_time_policy),
            expansion_service=self.expansion_service)
