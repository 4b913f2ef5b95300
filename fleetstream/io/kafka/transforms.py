"""Kafka topics in and out of the streaming job: KafkaIO (or Python consumers) read, a Python
producer writes.

    envelopes, unreadable = pipeline | ReadRawFromKafka(kafka, {"tesla": "raw.tesla", ...})
    # envelopes: lists of RawEnvelope
    events, bad = pipeline | ReadActivationsFromKafka(kafka, "activations")
    dead_letters | WriteJsonToKafka(kafka, "dead-letters")

`KafkaSettings` holds the bootstrap servers, consumer group, where to start,
the expansion service (the Java side of KafkaIO) and what reads the raw topics
(`raw_reader`: KafkaIO, or `ReadKafkaPartitions` in the Python workers, which
keeps its positions and commits its offsets the same way; see its module). Raw topics carry the
OEM payload as the record value and the receive time as the record timestamp
(DATA-CONTRACTS §1); each topic names its source. A source whose mapper reads
several record types (`RECORD_TYPES`: Tesla fleet-telemetry's `V`,
`connectivity`, `errors`, `alerts`) has one topic per type, named as
fleet-telemetry's Kafka dispatcher names them, `<namespace>_<record type>`, with
the source's configured topic as the namespace (`raw.tesla_telemetry_V`, ...):
the topic gives the envelope its `record_type`, and the payload is not looked
at (`record_topics`). The envelope's receive time
is the record timestamp; the element timestamp (and so the watermark) is the
time the job read the record: a watermark from record timestamps would stall
on any partition that has no data yet. The activations topic is read with
record-time timestamps instead, so its watermark passes a moment only once
every event published before it has been read; `mark_partitions` (at
submission) writes a read mark to each of its partitions so none is empty.

Read positions live in Flink's checkpoints: a job restored from its last
checkpoint or savepoint resumes exactly where it stopped. The raw topics' read
positions are also committed to the consumer group each time Flink completes a
checkpoint (`commit_offsets`, default on: KafkaIO's `commit_offset_in_finalize`,
which the unbounded-source read used here, `use_deprecated_read` on the
expansion service, runs in the source's checkpoint finalisation), so a job
started afresh without a savepoint resumes at the last checkpointed offsets of
its consumer group; `start` applies to partitions the group has no offset for,
and `fleetstream stream --start earliest|latest|TIME` moves the group's offsets
before submitting (`kafka_offsets`). Auto-commit stays off: it could skip
records read but not yet processed. The activations topic is never committed:
every job instance reads the whole compacted topic, since its keyed state starts
empty without a savepoint.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

import apache_beam as beam
import orjson
from apache_beam import pvalue
from confluent_kafka import KafkaException

from fleetstream.io.kafka.partition_reader import KafkaRecord, ReadKafkaPartitions
from fleetstream.io.kafka.producer import READ_MARK_KEY, AckedProducer
from fleetstream.io.kafka.record_topics import record_topics
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.runtime.group_in_bundle import BatchInBundle, batch_main_outputs
from fleetstream.schemas.activations import ActivationEvent, parse_activation
from fleetstream.schemas.dead_letter import INGEST_STAGE, dead_letter
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.schemas.timestamps import iso_ms
from fleetstream.transforms.activations import MAX_FUTURE_MS, approval_from_the_future
from fleetstream.transforms.counters import BundleCounts

INVALID = "invalid"  # tag of the dead-letter outputs


class ReadRawFromKafka(beam.PTransform):
    """Raw topics -> lists of RawEnvelopes; a record from a topic with no source is a dead letter.

    Envelopes come in lists (a poll's, or with KafkaIO a bundle's), so the job's
    steps pay the runner's per-element cost per list; the element timestamp is
    the read time (of the bundle's first record, with KafkaIO).
    """

    def __init__(self, kafka: KafkaSettings, topics: Mapping[str, str]) -> None:
        super().__init__()
        self._kafka = kafka
        read = record_topics(topics)
        self._source_of_topic = {topic: source for topic, (source, _) in read.items()}
        self._record_type_of_topic = {topic: record_type for topic, (_, record_type)
                                      in read.items() if record_type is not None}

    def expand(self, begin: pvalue.PBegin) -> "RawRead":
        kafka = self._kafka
        if kafka.raw_reader == "python":
            records = begin | "ReadRawTopics" >> ReadKafkaPartitions(
                kafka.bootstrap_servers, list(self._source_of_topic), kafka.consumer_group,
                kafka.reset(), kafka.commit_offsets)
            to_envelopes = _PollToEnvelopesFn(self._source_of_topic,
                                              self._record_type_of_topic)
        else:
            records = begin | "ReadRawTopics" >> kafka.read(
                self._source_of_topic, commit_offsets=kafka.commit_offsets)
            to_envelopes = _ToEnvelopeFn(self._source_of_topic, self._record_type_of_topic)
        read = records | "ToEnvelopes" >> beam.ParDo(to_envelopes).with_outputs(
            INVALID, main="envelopes")
        envelopes = read.envelopes
        if kafka.raw_reader != "python":
            envelopes = envelopes | "BatchEnvelopes" >> BatchInBundle()
        return RawRead(envelopes, read[INVALID])


class RawRead(NamedTuple):
    """What ReadRawFromKafka produces."""

    envelopes: beam.PCollection   # lists of RawEnvelope
    invalid: beam.PCollection     # dead letters: records of topics no source reads


class _ToEnvelopeFn(beam.DoFn):
    """A KafkaIO record -> RawEnvelope, or a dead letter when no source reads its topic.

    The topic names the source and, for a source with record types, the record type.
    """

    def __init__(self, source_of_topic: Mapping[str, str],
                 record_type_of_topic: Mapping[str, str] | None = None) -> None:
        self._source_of_topic = dict(source_of_topic)
        self._record_type_of_topic = dict(record_type_of_topic or {})
        self._counts = BundleCounts()

    def process(self, record: Any) -> Iterable[Any]:
        yield self._envelope(record.topic, int(record.timestamp), bytes(record.value or b""))

    def _envelope(self, topic: str, timestamp_ms: int, payload: bytes) -> Any:
        source = self._source_of_topic.get(topic)
        if source is None:
            self._counts.add("unreadable.read")
            self._counts.add("unreadable.failed")
            return pvalue.TaggedOutput(INVALID, dead_letter(
                None, timestamp_ms, "failed", INGEST_STAGE,
                [{"field": "topic", "reason": f"no source reads topic {topic!r}"}],
                payload, None))
        return RawEnvelope(source, timestamp_ms, payload, self._record_type_of_topic.get(topic))

    def finish_bundle(self) -> None:
        self._counts.flush()


class _PollToEnvelopesFn(_ToEnvelopeFn):
    """A poll of ReadKafkaPartitions (a list of KafkaRecords) -> RawEnvelopes."""

    def process(self, records: list[KafkaRecord]) -> Iterable[Any]:  # type: ignore[override]
        envelope = self._envelope
        return batch_main_outputs(envelope(topic, timestamp_ms, payload)
                                  for topic, timestamp_ms, payload in records)


class ReadActivationsFromKafka(beam.PTransform):
    """The activations topic -> ActivationEvents; an invalid event is a dead letter."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        super().__init__()
        self._kafka = kafka
        self._topic = topic

    def expand(self, begin: pvalue.PBegin) -> pvalue.DoOutputsTuple:
        # Its own consumer group: every job instance reads the whole compacted topic. Record
        # time, so that the watermark passes a moment only once the events published before
        # it are read (the keyed join holds unknown vehicles until then: see
        # OrderAndPermitKeyed); `mark_partitions` keeps empty partitions from stalling it.
        return (begin
                | "ReadActivations" >> self._kafka.read([self._topic], "-activations",
                                                       reset="earliest", record_time=True)
                | "ParseActivations" >> beam.ParDo(_ParseActivationFn())
                .with_outputs(INVALID, main="events"))


class _ParseActivationFn(beam.DoFn):
    def process(self, record: Any) -> Iterable[ActivationEvent | pvalue.TaggedOutput]:
        if record.value is None or (record.key is not None
                                    and bytes(record.key) == READ_MARK_KEY):
            return                      # a tombstone or a read mark: not an event
        payload = bytes(record.value)
        try:
            event = parse_activation(orjson.loads(payload))
        except (orjson.JSONDecodeError, ValueError) as error:
            yield _invalid_activation(record, payload, f"invalid activation event: {error}")
            return
        if approval_from_the_future(event, record.timestamp):
            yield _invalid_activation(
                record, payload, f"approval dated {iso_ms(event.at_ms)}, more than "
                f"{MAX_FUTURE_MS // 1000} s after it was written ({iso_ms(record.timestamp)})")
            return
        yield event


def _invalid_activation(record: Any, payload: bytes, reason: str) -> pvalue.TaggedOutput:
    return pvalue.TaggedOutput(INVALID, dead_letter(
        None, record.timestamp, "failed", INGEST_STAGE,
        [{"field": "activation", "reason": reason}], payload, None))


class WriteJsonToKafka(beam.PTransform):
    """Write (key, JSON-serialisable value) pairs or dicts -- or lists of them -- to a topic.

    A Python producer in the step that makes the records (no hand-over to
    KafkaIO's Java writer): records are sent as they come, and the bundle
    finishes only once the broker has acknowledged all of them, so a failed
    send fails the bundle and Beam retries it (at least once; a retried record
    keeps its message id).
    """

    def __init__(self, kafka: KafkaSettings, topic: str, key_field: str | None = None,
                 batches: bool = False) -> None:
        super().__init__()
        self._kafka = kafka
        self._topic = topic
        self._key_field = key_field
        self._batches = batches

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | "WriteTopic" >> beam.ParDo(_ProduceFn(
            self._kafka.bootstrap_servers, self._topic, self._key_field, self._batches))


class _ProduceFn(beam.DoFn):
    def __init__(self, bootstrap: str, topic: str, key_field: str | None, batches: bool,
                 flush_timeout_s: float = 60.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._key_field = key_field
        self._batches = batches
        self._flush_timeout_s = flush_timeout_s

    def setup(self) -> None:
        self._producer = AckedProducer(self._bootstrap)

    def process(self, element: Any) -> None:
        send, topic, key_field = self._producer.send, self._topic, self._key_field
        for item in (element if self._batches else (element,)):
            send(topic, *_to_kafka_record(item, key_field))

    def finish_bundle(self) -> None:
        left, failures = self._producer.flush(self._flush_timeout_s)
        if left or failures:
            raise KafkaException(f"{len(failures) + left} record(s) not written to "
                                 f"{self._topic!r} on {self._bootstrap}: "
                                 f"{failures[0] if failures else 'flush timed out'}")

    def teardown(self) -> None:
        self._producer.flush(self._flush_timeout_s)
        del self._producer      # closes its connections


def _to_kafka_record(item: Any, key_field: str | None) -> tuple[bytes, bytes]:
    if isinstance(item, tuple):
        key, value = item
        return str(key).encode(), value if isinstance(value, bytes) else orjson.dumps(value)
    key = item.get(key_field) if key_field else None
    return (str(key).encode() if key is not None else b""), orjson.dumps(item)
