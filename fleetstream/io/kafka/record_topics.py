"""Which topics a job reads for its sources, and the source and record type each names.

Without Beam, so that the ingest gateway and the topic settings can use it. Most
sources read one topic, their configured one. A source whose mapper reads
several record types (`fleetstream.mappers.RECORD_TYPES`, Tesla fleet-telemetry's
`V`, `connectivity`, `errors`, `alerts`) reads one topic per type, named as
fleet-telemetry's Kafka dispatcher names them, `<namespace>_<record type>`, with
the source's configured topic as the namespace: `raw.tesla_telemetry_V`, ...
"""
from __future__ import annotations

from typing import Mapping

from fleetstream.mappers import RECORD_TYPES


def record_topics(raw_topics: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """Each topic the job reads -> (source, record type), from the configured source -> topic.

    A source with record types reads `<topic>_<record type>` for each (fleet-telemetry's
    `<namespace>_<recordType>`); any other source reads its topic, with no record type.
    """
    topics: dict[str, tuple[str, str | None]] = {}
    for source, topic in raw_topics.items():
        for record_type in RECORD_TYPES.get(source, (None,)):
            topics[topic if record_type is None else f"{topic}_{record_type}"] = (
                source, record_type)
    return topics
