"""RawWriter: one raw record to Kafka, awaited until the broker has acknowledged it.

    writer = RawWriter("127.0.0.1:9092")
    await writer.write("raw.smartcar", payload, key=b"VIN", timestamp_ms=received_ms)
    await writer.dead_letter("bmw", "mqtt", "payload over 1 MiB", payload, received_ms)

Every way in (HTTP push, bridges, poller) writes through it and acknowledges its own
sender only after `write` returned: acks=all and an idempotent producer, so a record
acknowledged is on every in-sync replica and a retry inside the client never duplicates
it. A write the broker does not acknowledge within `timeout_s` raises KafkaUnavailable:
the client gives up on the record at that moment too (`message.timeout.ms`), so the
sender told to retry (HTTP 503) is not also written later. One background thread serves
the producer's delivery reports and hands them to the event loops that asked, one
`call_soon_threadsafe` per loop and poll batch, not one per record.

`submit` is `write` without the coroutine: it hands the record over at once and returns
the future of its acknowledgement (for callers that answer from a callback, not a task).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.schemas.dead_letter import INGEST_STAGE, dead_letter
from fleetstream.settings.ingest import DEFAULT_MAX_BODY_BYTES
from fleetstream.settings.topics import DEAD_LETTERS_TOPIC


class KafkaUnavailable(Exception):
    """The broker did not acknowledge a record in time; nothing was written."""


class RecordRefused(Exception):
    """Kafka will never take this record as it is (over the size limit, invalid); nothing
    was written. `too_large` says whether its size is why."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(f"refused by Kafka: {error.str()}")
        self.too_large = error.code() in _TOO_LARGE


#: refusals that no retry can mend
_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)
_REFUSED = (*_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG)
#: what a record may add to its value on the wire (key, headers, batch framing)
RECORD_OVERHEAD_BYTES = 64 * 1024


class RawWriter:
    """An acks=all, idempotent producer whose writes are awaited one by one."""

    def __init__(self, bootstrap: str, timeout_s: float = 5.0,
                 dead_letters_topic: str = DEAD_LETTERS_TOPIC,
                 max_value_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.dead_letters_topic = dead_letters_topic
        #: the producer's and the topics' record size limit: a value of `max_value_bytes`
        #: (the largest body the gateway accepts) fits, whatever the defaults (1,000,000)
        self.max_record_bytes = max_value_bytes + RECORD_OVERHEAD_BYTES
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 2, "message.timeout.ms": int(timeout_s * 1000),
            "compression.type": "lz4", "message.max.bytes": self.max_record_bytes})
        #: delivery reports (loop, future, error) not yet handed to their loop
        self._reports: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None],
                                   KafkaError | None]] = deque()
        self._running = True
        self._poller = threading.Thread(target=self._serve_reports, name="raw-writer-reports",
                                        daemon=True)
        self._poller.start()

    def ensure_topics(self, topics: list[str]) -> None:
        """Create the raw topics (and the dead-letter topic) that do not exist yet."""
        create_topics(self.bootstrap, [
            Topic(t, config={"max.message.bytes": str(self.max_record_bytes)})
            for t in {*topics, self.dead_letters_topic}])

    async def write(self, topic: str, value: bytes, key: bytes | None = None,
                    timestamp_ms: int | None = None) -> None:
        """Write one record; return once the broker acknowledged it. KafkaUnavailable when it
        did not in time, RecordRefused when it never will."""
        await self.submit(topic, value, key, timestamp_ms)

    def submit(self, topic: str, value: bytes, key: bytes | None = None,
               timestamp_ms: int | None = None) -> asyncio.Future[None]:
        """Hand one record to the producer now (from the running event loop); the future
        is done once the broker acknowledged it, or fails as `write` does. KafkaUnavailable
        or RecordRefused at once when the producer cannot even queue it."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()
        reports = self._reports
        try:
            self._producer.produce(
                topic, value, key, timestamp=timestamp_ms or int(time.time() * 1000),
                on_delivery=lambda error, _message: reports.append((loop, acked, error)))
        except BufferError:
            raise KafkaUnavailable("the producer's local queue is full") from None
        except KafkaException as error:          # refused before it was sent
            raise RecordRefused(error.args[0]) from None
        return acked

    def reachable(self, timeout_s: float = 1.0) -> bool:
        """True when a broker answers a metadata request within `timeout_s` (blocking: run it
        in an executor from the event loop)."""
        try:
            return bool(self._producer.list_topics(timeout=timeout_s).brokers)
        except KafkaException:
            return False

    async def dead_letter(self, source: str, via: str, reason: str, payload: bytes,
                          received_ms: int | None = None) -> None:
        """A record that cannot go to its raw topic (too big, undecodable envelope): a dead
        letter (DATA-CONTRACTS §5, stage `ingest`) with the reason and the whole payload."""
        letter = dead_letter(source, received_ms or int(time.time() * 1000), "failed",
                             INGEST_STAGE, [{"field": via, "reason": reason}], payload, None)
        await self.write(self.dead_letters_topic, orjson.dumps(letter), source.encode())

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait for what is queued, then stop serving reports."""
        self._producer.flush(timeout_s)
        self._running = False
        self._poller.join(timeout=2)
        self._hand_over()

    def _serve_reports(self) -> None:
        while self._running:
            if self._producer.poll(0.05):
                self._hand_over()

    def _hand_over(self) -> None:
        """Every report collected so far to its loop, one batch per loop."""
        batches: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None],
                                                            KafkaError | None]]] = {}
        reports = self._reports
        while reports:
            loop, future, error = reports.popleft()
            batches.setdefault(loop, []).append((future, error))
        for loop, batch in batches.items():
            try:
                loop.call_soon_threadsafe(_settle_all, batch)
            except RuntimeError:   # that loop is closed: nobody waits for these any more
                pass


def _settle_all(batch: list[tuple[asyncio.Future[None], KafkaError | None]]) -> None:
    for future, error in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        elif error.code() in _REFUSED:
            future.set_exception(RecordRefused(error))
        else:
            future.set_exception(KafkaUnavailable(f"not written: {error.str()}"))
