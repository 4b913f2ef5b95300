"""KafkaSink: each document as one record on a topic of the customer's own Kafka cluster.

Configuration (`sink:` of an application)::

    sink:
      type: kafka
      bootstrap: kafka.customer.example.com:9093   # required: the customer's brokers
      topic: fleet-a.telemetry           # default fleetstream.<application_id>
      producer_config:                   # passed through to librdkafka: TLS, SASL, ...
        security.protocol: SASL_SSL
        sasl.mechanism: SCRAM-SHA-512
        sasl.username: fleetstream
        sasl.password_env: FLEET_A_KAFKA_PASSWORD   # `<key>_env`: read from the environment

Record key = the VIN, value = the document JSON, headers `message_id` and
`application_id`. The producer is idempotent (`enable.idempotence`, so
`acks=all`): the broker keeps each partition's records in the order sent and
drops the producer's own resends, and since the key is the VIN a vehicle's
documents stay in order. `write` queues the whole batch and waits (up to
`DELIVERY_TIMEOUT_S`) for every delivery report; librdkafka gives up on a record
after `message.timeout.ms` (15 s here unless `producer_config` sets it; librdkafka's
own default is 5 minutes), and once librdkafka reports every broker down a write gives
up after DOWN_GIVE_UP_S, purging its records not yet sent: against a cluster that is
away a write fails within about a second (while it waits, Deliver's bundle, and so
every other application's delivery on the worker, waits too); any failure raises
`KafkaDeliveryError` and Deliver retries the batch, so a document may arrive
twice, with the same `message_id`. A record the producer refuses as too large
(`message.max.bytes`, 1 MB unless `producer_config` raises it) raises
`RecordTooLarge`, a `PermanentWriteError`: the batch goes to the delivery dead
letters.

`producer_config` keys ending in `_env` name the environment variable holding
the value, so secrets stay out of the file; values are never logged.
`bootstrap.servers`, `enable.idempotence` and `acks` are the sink's own.
`check()` refuses settings librdkafka does not accept and a topic the cluster
does not have (the sink creates no topic at the customer).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from confluent_kafka import KafkaError, KafkaException, Producer

from fleetstream.io.kafka.producer import AckedProducer
from fleetstream.io.sinks.base import WRITE_TIMEOUT_S, Sink
from fleetstream.schemas.delivery import Batch, Batching
from fleetstream.schemas.errors import ConfigError, PermanentWriteError
from fleetstream.schemas.secrets import client_config

#: librdkafka settings the sink sets itself
OWN_SETTINGS = frozenset({"bootstrap.servers", "enable.idempotence", "acks"})
#: how long `write` waits for a batch's delivery reports, and `check` for the cluster
DELIVERY_TIMEOUT_S = WRITE_TIMEOUT_S
#: librdkafka settings the sink defaults and `producer_config` may change: a record not
#: acknowledged within 15 s fails (its delivery report comes within DELIVERY_TIMEOUT_S)
DEFAULT_SETTINGS = {"message.timeout.ms": 15_000}
#: how long `write` waits for a cluster whose brokers are all down
DOWN_GIVE_UP_S = 1.0
CHECK_TIMEOUT_S = 10.0


class KafkaDeliveryError(ConnectionError):
    """Some records of a batch were not acknowledged by the cluster."""


class RecordTooLarge(PermanentWriteError, ValueError):
    """A document is over the producer's `message.max.bytes`: retrying cannot help."""


class KafkaSink(Sink):
    """Documents as Kafka records keyed by VIN, through an idempotent producer."""

    TYPE = "kafka"
    DEFAULT_BATCHING = Batching(max_records=5000, max_bytes=16 << 20, max_delay_s=0.5)
    REQUIRED = frozenset({"bootstrap"})
    OPTIONAL = frozenset({"topic", "producer_config"})

    def __init__(self, application_id: str, options: Mapping[str, Any],
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(application_id, options)
        self.where = f"applications[{application_id}].sink"
        self.bootstrap = options["bootstrap"]
        if not isinstance(self.bootstrap, str) or not self.bootstrap:
            raise ConfigError(f"{self.where}.bootstrap: expected HOST:PORT[,HOST:PORT...], "
                              f"got {self.bootstrap!r}")
        self.topic = options.get("topic", f"fleetstream.{application_id}")
        if not isinstance(self.topic, str) or not self.topic:
            raise ConfigError(f"{self.where}.topic: expected a topic name, got {self.topic!r}")
        # holds secrets: kept out of `options`, reprs and messages
        self._config = {**DEFAULT_SETTINGS, **client_config(f"{self.where}.producer_config",
                                        options.get("producer_config", {}), OWN_SETTINGS,
                                        os.environ if environ is None else environ),
                        "enable.idempotence": True, "acks": "all"}
        self._producer: AckedProducer | None = None

    def check(self) -> None:
        try:
            producer = Producer({**self._config, "bootstrap.servers": self.bootstrap})
        except KafkaException as error:
            raise ConfigError(f"{self.where}.producer_config: {error.args[0].str()}") from None
        try:
            topics = producer.list_topics(self.topic, timeout=CHECK_TIMEOUT_S).topics
        except KafkaException as error:
            raise ConfigError(f"{self.where}.bootstrap: cannot reach Kafka at "
                              f"{self.bootstrap}: {error.args[0].str()}") from None
        metadata = topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            raise ConfigError(f"{self.where}.topic: topic {self.topic!r} does not exist on "
                              f"{self.bootstrap}; create it first")

    def open(self) -> None:
        if self._producer is None:
            self._producer = AckedProducer(self.bootstrap, self._config)

    def write(self, batch: Batch) -> None:
        self.open()
        assert self._producer is not None
        application = batch.application_id.encode()
        for record in batch.records:
            try:
                self._producer.send(self.topic, record.vin, record.document,
                                    [("message_id", record.message_id),
                                     ("application_id", application)])
            except KafkaException as error:
                if error.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise RecordTooLarge(
                        f"document {record.message_id} of vehicle {record.vin} is "
                        f"{len(record.document)} bytes, over the producer's message.max.bytes"
                    ) from None
                raise
        left, failures = self._producer.flush(DELIVERY_TIMEOUT_S, DOWN_GIVE_UP_S)
        if left or failures:
            raise KafkaDeliveryError(
                f"kafka topic {self.topic!r} at {self.bootstrap}: {left + len(failures)} of "
                f"{len(batch.records)} record(s) of batch {batch.batch_id} not delivered; "
                f"first error: {failures[0] if failures else f'none within {DELIVERY_TIMEOUT_S:g} s'}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(DELIVERY_TIMEOUT_S)
            self._producer = None
