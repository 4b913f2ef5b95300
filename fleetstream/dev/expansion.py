"""Beam's Java expansion service with KafkaIO, for Python's ReadFromKafka/WriteToKafka.

Runs `org.apache.beam.sdk.expansion.service.ExpansionService <port>` from the
jar folder of `beam.beam_jars()` (KafkaIO and kafka-clients are on it). The
expanded Java steps get the EMBEDDED environment: Flink runs their Java SDK
harness inside the TaskManager (the default, a Docker container, cannot run
here). KafkaIO reads expand in the legacy `UnboundedSource` mode
(`--experiments=use_deprecated_read`): on Beam 2.62's portable Flink runner the
default splittable-DoFn read stalls after its first records and its offset
commit step fails at the first completed checkpoint (docs/runtime.md).
Python pipelines use it with `expansion_service="localhost:8088"`:

    ReadFromKafka(consumer_config={"bootstrap.servers": "127.0.0.1:9092"},
                  topics=["raw.tesla"], expansion_service="localhost:8088")
"""
from __future__ import annotations

from fleetstream.dev.beam import beam_jars
from fleetstream.dev.java import JAVA17_OPENS, java_command
from fleetstream.dev.service import Service


class ExpansionService(Service):
    """The Kafka-capable expansion service on `port`."""

    name = "expansion"

    def __init__(self, port: int = 8088) -> None:
        super().__init__(port)

    def install(self) -> None:
        beam_jars()

    def command(self) -> list[str]:
        return java_command(beam_jars(), "org.apache.beam.sdk.expansion.service.ExpansionService",
                            str(self.port), "--defaultEnvironmentType=EMBEDDED",
                            "--experiments=use_deprecated_read",
                            jvm_options=["-Xmx512m", *JAVA17_OPENS])
