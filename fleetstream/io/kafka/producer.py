"""Produce raw envelopes to the raw Kafka topics, keyed by VIN, paced in real time.

    produce_envelopes("127.0.0.1:9092", simulate_keyed(100, duration_s=60, rate=1.0),
                      messages_per_s=100, topic_of_source={"tesla": "raw.tesla", ...})

Each envelope's payload becomes the record value on its source's topic
(`topic_of_source`; the default names are in `fleetstream.settings.topics`; an
envelope with a `record_type` goes to `<topic>_<record type>` with the `vin`,
`txtype` and `receivedat` headers, as fleet-telemetry's Kafka dispatcher writes
it), with the VIN as key so a vehicle's records share
a partition and keep their order; the record timestamp is the produce time
(the receive time, DATA-CONTRACTS §1). Records are sent at `messages_per_s`
(None: as fast as the broker takes them), with progress on stderr.
"""
from __future__ import annotations

import base64
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer


Envelope = Mapping[str, str]
#: records an AckedProducer sends between two polls for delivery reports
POLL_EVERY = 256
#: the failure of a record purged because every broker was down
DOWN_REASON = "not sent: every broker is down (purged from the local queue)"


class AckedProducer:
    """A Kafka producer that waits out a full local queue and keeps what the broker refused."""

    def __init__(self, bootstrap: str, config: Mapping[str, Any] | None = None) -> None:
        """`config`: more librdkafka settings (TLS, SASL, ...) over the defaults here."""
        failures: list[str] = []
        #: [True] from librdkafka's "all brokers down" until the next delivered record
        down = [False]

        # the callbacks hold the lists, not self: no cycle keeps a dropped producer alive
        def delivered(error, _message) -> None:
            if error is None:
                down[0] = False
            else:
                failures.append(str(error))

        def on_error(error: KafkaError) -> None:
            if error.code() == KafkaError._ALL_BROKERS_DOWN:
                down[0] = True

        self._producer = Producer({"linger.ms": 5, "enable.idempotence": True,
                                   "compression.type": "lz4", **(config or {}),
                                   "bootstrap.servers": bootstrap, "error_cb": on_error})
        self._failures, self._delivered, self._down = failures, delivered, down
        self._unpolled = 0

    def send(self, topic: str, key: bytes | str, value: bytes,
             headers: Sequence[tuple[str, bytes | str]] | None = None) -> None:
        """Queue one record, waiting for room when the local queue is full."""
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, headers=headers,
                                       on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let the broker catch up
                self._producer.poll(0.1)
        # serve delivery reports now and then, not per record (a poll per record was a
        # tenth of the streaming job's Python time); `flush` serves the rest
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def flush(self, timeout_s: float, give_up_when_down_s: float | None = None
              ) -> tuple[int, list[str]]:
        """Wait for every queued record: (records still unsent, errors since the last flush).

        With `give_up_when_down_s`, stop waiting that long after the start when every
        broker is down: the records not yet sent are purged from the local queue (each
        counted as a failure), so that a caller that retries later is not held for the whole
        `message.timeout.ms` by a cluster that is away. Records already in flight stay.
        """
        if give_up_when_down_s is None:
            left = self._producer.flush(timeout_s)
        else:
            left = self._flush_while_up(timeout_s, give_up_when_down_s)
        failures = self._failures[:]
        self._failures.clear()
        return left, failures

    def _flush_while_up(self, timeout_s: float, give_up_when_down_s: float) -> int:
        """`flush` that purges what is not sent yet once every broker has been down
        `give_up_when_down_s` into the wait; the records left."""
        started = time.monotonic()
        left = self._producer.flush(0)
        while left and (waited := time.monotonic() - started) < timeout_s:
            if self._down[0] and waited >= give_up_when_down_s:
                self._producer.purge(in_queue=True, in_flight=False)
                left = self._producer.flush(0)     # serves the purged records' reports
                self._failures[:] = [DOWN_REASON if "Purged" in failure else failure
                                     for failure in self._failures]
                return left
            left = self._producer.flush(min(0.1, timeout_s - waited))
        return left


def produce_envelopes(bootstrap: str, keyed_envelopes: Iterable[tuple[str, Envelope]],
                      messages_per_s: float | None = None, *,
                      topic_of_source: Mapping[str, str],
                      progress_every_s: float = 5.0) -> int:
    """Send the envelopes; the count sent. Raises KafkaException if any record failed."""
    producer = AckedProducer(bootstrap)
    started = last_report = time.monotonic()
    sent = 0
    for vin, envelope in keyed_envelopes:
        source = envelope["source"]
        record_type = envelope.get("record_type")
        payload = (envelope["payload"].encode() if "payload" in envelope
                   else base64.b64decode(envelope["payload_b64"]))
        if record_type is None:
            producer.send(topic_of_source[source], vin.encode(), payload)
        else:  # as fleet-telemetry's dispatcher: <namespace>_<record type>, and its headers
            producer.send(f"{topic_of_source[source]}_{record_type}", vin.encode(), payload,
                          [("vin", vin), ("txtype", record_type),
                           ("receivedat", str(int(time.time() * 1000)))])
        sent += 1
        if messages_per_s:
            ahead_s = sent / messages_per_s - (time.monotonic() - started)
            if ahead_s > 0:
                time.sleep(ahead_s)
        now = time.monotonic()
        if now - last_report >= progress_every_s:
            print(f"produced {sent:,} records ({sent / (now - started):,.0f}/s)",
                  file=sys.stderr, flush=True)
            last_report = now
    left, failures = producer.flush(60)
    if left or failures:
        raise KafkaException(f"{left + len(failures)} of {sent} records were not delivered; "
                             f"first error: {failures[0] if failures else 'flush timed out'}")
    return sent


#: key of the record `mark_partitions` writes to each activations partition (not an event)
READ_MARK_KEY = b"fleetstream/read-mark"


def mark_partitions(bootstrap: str, topic: str, timeout_s: float = 30.0) -> int:
    """Write one read mark, timestamped now, to every partition of `topic`; the partitions.

    The streaming job reads activations with record-time timestamps, and KafkaIO holds
    that read's watermark back until every partition has served a record and been read
    to its end: a partition that never held one would stall it for good. The mark keeps
    every partition non-empty (one per partition survives compaction, same key) and
    moves the watermark to the submission time once everything before it is read.
    """
    producer = Producer({"bootstrap.servers": bootstrap})
    metadata = producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KafkaException(f"topic {topic!r} does not exist on {bootstrap}")
    for partition in sorted(metadata.partitions):
        producer.produce(topic, key=READ_MARK_KEY, value=b"", partition=partition)
    if producer.flush(timeout_s):
        raise KafkaException(f"read marks not all delivered to {topic} within {timeout_s:.0f} s")
    return len(metadata.partitions)

