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

`Bridge.forward` does that part for every bridge: it writes one message (or its dead
letter), retries with backoff while Kafka is unavailable, and says whether the message
may now be acknowledged (False only when the bridge was stopped first). A bridge that
receives on a callback uses `Forwarding` instead: each message is handed to the producer
at once and acknowledged from the delivery report, with no task of its own; only a
message that fails (Kafka away, poison) goes the way of `forward`, in a task.
"""
from __future__ import annotations

import abc
import asyncio
import logging
import time
from functools import partial
from typing import Any, Callable, ClassVar, Mapping, Sequence

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import KafkaUnavailable, RawWriter, RecordRefused
from fleetstream.schemas.errors import ConfigError, refuse_unknown

log = logging.getLogger(__name__)

#: a message larger than this (bytes) is a dead letter, unless `max_message_bytes` says otherwise
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: an over-size message's dead letter keeps this much of its payload
DEAD_LETTER_KEEP_BYTES = 64 << 10
#: while Kafka is unavailable: the first pause before writing the same message again, the longest
RETRY_FIRST_S, RETRY_MAX_S = 0.2, 10.0


class Poison(ValueError):
    """A message that can never be written as it is: it goes to the dead letters."""


class Bridge(abc.ABC):
    """Takes one source's messages from somewhere and writes them to its raw topic."""

    #: the section name in a source's configuration, and the `via` metric label
    KIND: ClassVar[str]
    #: accepted keys of the section: a missing required one or an unknown one is refused
    REQUIRED: ClassVar[frozenset[str]] = frozenset()
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    #: keys every bridge accepts besides its own
    COMMON: ClassVar[frozenset[str]] = frozenset({"max_message_bytes"})

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str) -> None:
        """Keep and check the options; ConfigError naming `where.<key>`."""
        refuse_unknown(where, options, self.REQUIRED | self.OPTIONAL | self.COMMON)
        missing = sorted(self.REQUIRED - set(options))
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        self.source, self.topic, self.options, self.where = source, topic, dict(options), where
        self.max_message_bytes = self.option("max_message_bytes", int, DEFAULT_MAX_MESSAGE_BYTES,
                                             minimum=1)

    def option(self, key: str, kind: type | tuple[type, ...], default: Any = None, *,
               minimum: float | None = None, choices: Sequence[Any] = ()) -> Any:
        """The option `key` checked against `kind` (and `minimum` or `choices`); ConfigError
        naming `where.key`."""
        value = self.options.get(key, default)
        if key not in self.options:
            return value
        wrong = (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool
                 or (minimum is not None and value < minimum)
                 or (choices and value not in choices)
                 or (isinstance(value, str) and not value))
        if wrong:
            names = kind if isinstance(kind, tuple) else (kind,)
            expected = (f"one of {', '.join(map(str, choices))}" if choices else
                        " or ".join(_KIND_NAMES.get(k, k.__name__) for k in names)
                        + (f" >= {minimum}" if minimum is not None else ""))
            raise ConfigError(f"{self.where}.{key}: expected {expected}, got {value!r}")
        return value

    async def forward(self, writer: RawWriter, metrics: IngestMetrics, payload: bytes,
                      key: bytes | None, stop: asyncio.Event, poison: str | None = None,
                      received_ms: int | None = None) -> bool:
        """Write one message to the raw topic, or, when it is poison (`poison` gives the
        reason, or it is over `max_message_bytes`), its dead letter. While Kafka is
        unavailable, wait with backoff and write it again. True once written: the caller
        may acknowledge it; False when `stop` was set before it could be written."""
        received_ms = received_ms or int(time.time() * 1000)
        if poison is None and len(payload) > self.max_message_bytes:
            poison = (f"message of {len(payload)} bytes is over max_message_bytes "
                      f"{self.max_message_bytes} (the dead letter keeps its first "
                      f"{DEAD_LETTER_KEEP_BYTES} bytes)")
            payload = payload[:DEAD_LETTER_KEEP_BYTES]
        delay = RETRY_FIRST_S
        while True:
            try:
                if poison is None:
                    with metrics.produce_latency.time():
                        await writer.write(self.topic, payload, key, received_ms)
                    metrics.records.labels(source=self.source, via=self.KIND).inc()
                else:
                    await writer.dead_letter(self.source, self.KIND, poison, payload, received_ms)
                    metrics.dead_letters.labels(source=self.source, via=self.KIND).inc()
                return True
            except KafkaUnavailable as error:
                log.warning("%s: Kafka unavailable (%s); writing again in %.1f s",
                            self.where, error, delay)
            except RecordRefused as error:
                if poison is not None:
                    raise
                poison = str(error)                    # permanent: dead-letter it
                payload = payload[:DEAD_LETTER_KEEP_BYTES]
                continue
            if await wait_for_stop(stop, delay):
                return False
            delay = min(delay * 2, RETRY_MAX_S)

    @abc.abstractmethod
    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        """Bridge messages until `stop` is set; acknowledge each only after its write."""


_KIND_NAMES = {str: "a non-empty string", int: "a whole number", float: "a number",
               dict: "a mapping", bool: "true or false"}


async def wait_for_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` or until `stop` is set; True when it is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
    return stop.is_set()


class Forwarding:
    """The messages of one bridge's run on their way to Kafka.

    `send` hands a message to the producer and returns; `acknowledge` is called once Kafka
    acknowledged its record (or its dead letter). While Kafka takes records at once this
    costs a `produce` and a callback per message; a message refused at once, failed later,
    over the size limit or poison is written by `Bridge.forward` in a task of its own
    (backoff while Kafka is away). `drain` waits for every message sent so far."""

    def __init__(self, bridge: Bridge, writer: RawWriter, metrics: IngestMetrics,
                 stop: asyncio.Event) -> None:
        self.bridge, self.writer, self.metrics, self.stop = bridge, writer, metrics, stop
        self._written = metrics.records.labels(source=bridge.source, via=bridge.KIND)
        self._observe = metrics.produce_latency.observe
        self._outstanding = 0
        self._retrying: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def send(self, payload: bytes, key: bytes | None, acknowledge: Callable[[], Any],
             poison: str | None = None) -> None:
        """Write `payload` (its dead letter when `poison` says why), then call `acknowledge`
        (not when the bridge stops before it could be written)."""
        self._outstanding += 1
        self._idle.clear()
        received_ms = int(time.time() * 1000)
        if poison is None and len(payload) <= self.bridge.max_message_bytes:
            try:
                acked = self.writer.submit(self.bridge.topic, payload, key, received_ms)
            except (KafkaUnavailable, RecordRefused):
                pass
            else:
                acked.add_done_callback(partial(self._acked, time.perf_counter(), payload,
                                                key, acknowledge, received_ms))
                return
        self._retry(payload, key, acknowledge, poison, received_ms)

    async def drain(self) -> None:
        """Wait until every message sent is written (or given up because of `stop`)."""
        await self._idle.wait()

    def _acked(self, started: float, payload: bytes, key: bytes | None,
               acknowledge: Callable[[], Any], received_ms: int,
               acked: asyncio.Future[None]) -> None:
        if acked.exception() is not None:    # Kafka away or refused: forward sorts it out
            self._retry(payload, key, acknowledge, None, received_ms)
            return
        self._observe(time.perf_counter() - started)
        self._written.inc()
        acknowledge()
        self._done()

    def _retry(self, payload: bytes, key: bytes | None, acknowledge: Callable[[], Any],
               poison: str | None, received_ms: int) -> None:
        async def forward() -> None:
            try:
                if await self.bridge.forward(self.writer, self.metrics, payload, key,
                                             self.stop, poison, received_ms):
                    acknowledge()
            finally:
                self._done()

        task = asyncio.get_running_loop().create_task(forward())
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    def _done(self) -> None:
        self._outstanding -= 1
        if not self._outstanding:
            self._idle.set()


def written_prefix(done: Sequence[bool]) -> int:
    """How many of `done`, from the first, are True: what an offset or a checkpoint may cover."""
    for index, ok in enumerate(done):
        if not ok:
            return index
    return len(done)
