"""KafkaBridge: a topic of an OEM's own Kafka cluster into the source's raw topic.

    sources:
      stellantis:
        kafka:
          bootstrap: kafka.oem.example.com:9093
          topic: vehicle-telemetry
          group: fleetstream-ingest      # our consumer group at the OEM
          consumer_config:               # passed through to librdkafka: TLS, SASL, ...
            security.protocol: SASL_SSL
            sasl.mechanism: SCRAM-SHA-512
            sasl.username: fleetstream
            sasl.password_env: STELLANTIS_KAFKA_PASSWORD   # `<key>_env`: read from the environment

A confluent-kafka consumer in the group, offsets committed by hand: each batch of up to
`BATCH` records is written to our Kafka (key = the source record's key, value = its
value, untouched), and only then are the offsets after the records written committed,
partition by partition. A record not written when the bridge stops is read again by the
group. A `consumer_config` key ending in `_env` names an environment variable holding
that setting's value, so passwords stay out of the file; `bootstrap.servers`,
`group.id` and `enable.auto.commit` are the bridge's own. A new group starts at the
earliest offset unless `auto.offset.reset` says otherwise.

The group's lag (high watermark minus position, summed over the assigned partitions)
is the `bridge_lag` gauge, read every `LAG_EVERY_S`. Poison: a record over
`max_message_bytes` goes to the dead letters and is committed past.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Mapping

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from fleetstream.ingest.bridges.base import Bridge, written_prefix
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.schemas.secrets import client_config

log = logging.getLogger(__name__)

BATCH = 500
POLL_S = 1.0
LAG_EVERY_S = 10.0
_OWN = frozenset({"bootstrap.servers", "group.id", "enable.auto.commit"})


class KafkaBridge(Bridge):
    """One topic of another Kafka cluster, offsets committed after our Kafka's ack."""

    KIND = "kafka"
    REQUIRED = frozenset({"bootstrap", "topic", "group"})
    OPTIONAL = frozenset({"consumer_config"})

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(source, topic, options, where)
        environ = os.environ if environ is None else environ
        self.bootstrap = self.option("bootstrap", str)
        self.source_topic = self.option("topic", str)
        self.group = self.option("group", str)
        config = client_config(f"{where}.consumer_config",
                               self.option("consumer_config", dict, {}), _OWN, environ)
        self.consumer_config = {"auto.offset.reset": "earliest", **config,
                                "bootstrap.servers": self.bootstrap,
                                "group.id": self.group, "enable.auto.commit": False}

    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        consumer = Consumer(self.consumer_config)
        lag = metrics.bridge_lag.labels(source=self.source, via=self.KIND)
        lag_at = 0.0
        consumer.subscribe([self.source_topic])
        try:
            while not stop.is_set():
                records = await asyncio.to_thread(consumer.consume, BATCH, POLL_S)
                records = [record for record in records if not self._failed(record)]
                written = await asyncio.gather(*(
                    self.forward(writer, metrics, record.value() or b"", record.key(), stop)
                    for record in records))
                offsets = _next_offsets(records, written)
                if offsets:
                    await asyncio.to_thread(self._commit, consumer, offsets)
                if time.monotonic() - lag_at > LAG_EVERY_S:
                    lag_at = time.monotonic()
                    lag.set(await asyncio.to_thread(_lag, consumer))
        finally:
            await asyncio.to_thread(consumer.close)

    def _failed(self, record: Any) -> bool:
        error = record.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: %s", self.where, error.str())
        return True

    def _commit(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:  # e.g. rebalanced away: the records come again
            log.warning("%s: commit failed: %s", self.where, error)


def _next_offsets(records: list[Any], written: list[bool]) -> list[TopicPartition]:
    """Per partition, the offset after the last record written with all before it written."""
    by_partition: dict[tuple[str, int], list[tuple[Any, bool]]] = {}
    for record, ok in zip(records, written):
        by_partition.setdefault((record.topic(), record.partition()), []).append((record, ok))
    offsets = []
    for (topic, partition), pairs in by_partition.items():
        count = written_prefix([ok for _, ok in pairs])
        if count:
            offsets.append(TopicPartition(topic, partition, pairs[count - 1][0].offset() + 1))
    return offsets


def _lag(consumer: Consumer) -> float:
    """Records between the group's position and the high watermark, over assigned partitions."""
    try:
        total = 0
        for position in consumer.position(consumer.assignment()):
            low, high = consumer.get_watermark_offsets(position, timeout=5)
            total += high - (position.offset if position.offset != OFFSET_INVALID else low)
        return float(total)
    except KafkaException:
        return float("nan")
