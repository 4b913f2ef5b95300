"""FleetStream's Kafka topic names and their defaults: the one place they are spelled.

One raw topic per source, `raw.<source>` (keyed by vehicle, so a vehicle's records
stay in order within a partition), plus the activations table (compacted: the
newest event per key is kept), dead letters and delivered documents. The
streaming job's settings (`kafka.raw_topics`, `kafka.activations_topic`, ...)
may name others; `fleetstream dev` creates these.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from fleetstream.io.kafka.admin import Topic
from fleetstream.io.kafka.record_topics import record_topics
from fleetstream.mappers import MAPPERS

ACTIVATIONS_TOPIC = "activations"
DEAD_LETTERS_TOPIC = "dead-letters"
DELIVERED_TOPIC = "delivered"


def raw_topic(source: str) -> str:
    """The raw topic of a source, unless the job's settings say otherwise."""
    return f"raw.{source}"


#: source -> its raw topic, unless kafka.raw_topics says otherwise; for a source with record
#: types (tesla_telemetry) the namespace of its topics, `<name>_<record type>`
DEFAULT_RAW_TOPICS: Mapping[str, str] = {source: raw_topic(source) for source in MAPPERS}


def topics_read(raw_topics: Mapping[str, str]) -> list[str]:
    """The names of the topics a job with these `kafka.raw_topics` reads (see `record_topics`)."""
    return list(record_topics(raw_topics))


def job_topics(raw_topics: Iterable[str], activations: str = ACTIVATIONS_TOPIC,
               dead_letters: str | None = DEAD_LETTERS_TOPIC,
               delivered: str | None = DELIVERED_TOPIC) -> list[Topic]:
    """The topics a streaming job reads and writes, the activations topic compacted."""
    return [*(Topic(topic) for topic in raw_topics),
            Topic(activations, 1, {"cleanup.policy": "compact"}),
            *(Topic(topic) for topic in (dead_letters, delivered) if topic)]


#: the default job's topics, which `fleetstream dev` creates
FLEETSTREAM_TOPICS: tuple[Topic, ...] = tuple(job_topics(topics_read(DEFAULT_RAW_TOPICS)))
