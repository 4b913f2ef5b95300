"""The one interface every bridge implements: messages from a broker or queue to Kafka.

A bridge is a class in its own module of `fleetstream/ingest/bridges/`, registered in
`registry.py` under its section name (`mqtt`, `amqp`, `sqs`, `kinesis`, `pubsub`,
`kafka`). `fleetstream ingest` builds one per source section at start-up (its options
checked then: a ConfigError names `sources.<source>.<kind>.<key>`) and runs it until
stopped. Its one promise: a source message is acknowledged (or deleted) only after
`writer.write` returned, i.e. after Kafka acknowledged its record; a message that can
never be written as it is (too big, an envelope it cannot decode) goes to
`writer.dead_letter` with the reason, and is then acknowledged, so it never blocks the
queue. While Kafka is away, a bridge pauses: it neither acknowledges nor loses anything.
"""
from __future__ import annotations

import abc
import asyncio
from typing import Any, ClassVar, Mapping

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.schemas.errors import ConfigError, refuse_unknown


class Bridge(abc.ABC):
    """Takes one source's messages from somewhere and writes them to its raw topic."""

    #: the section name in a source's configuration, and the `via` metric label
    KIND: ClassVar[str]
    #: accepted keys of the section: a missing required one or an unknown one is refused
    REQUIRED: ClassVar[frozenset[str]] = frozenset()
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str) -> None:
        """Keep and check the options; ConfigError naming `where.<key>`."""
        refuse_unknown(where, options, self.REQUIRED | self.OPTIONAL)
        missing = sorted(self.REQUIRED - set(options))
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        self.source, self.topic, self.options, self.where = source, topic, dict(options), where

    @abc.abstractmethod
    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        """Bridge messages until `stop` is set; acknowledge each only after its write."""
