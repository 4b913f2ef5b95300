"""The REST poller: calls an OEM's API for its approved vehicles and writes what changed.

    sources:
      mercedes:
        poll: {url: "http://127.0.0.1:8095/vehicles/{vin}", interval_s: 30, concurrency: 4,
               rate_per_s: 10, auth: {type: bearer, token_env: MERCEDES_TOKEN},
               activations_topic: activations, state_topic: ingest-poll-state}

    await run_poller(settings, poll_settings(settings), writer, metrics, stop)

For each source with a `poll:` section (checked at start: ConfigError naming
`sources.<source>.poll.<key>`):

- An `ActivationFollower` reads the activations topic from its beginning, then live, and
  keeps the winning event per (vin, application) (`poll_rules.ApprovedVehicles`). No call
  is made before it has read up to the topic's end as it was at start, and only vehicles
  approved for at least one application are called; a revocation is read within a second
  and the vehicle gets no call after it (approval is checked again just before each call).
- Calls are spread over `interval_s` (`poll_rules.first_due_ms` / `next_due_ms`), at most
  `concurrency` at a time and `rate_per_s` a second. A 429 pauses every call to that OEM
  until its Retry-After has passed; 5xx, other errors and timeouts back the vehicle off
  (`poll_rules.backoff_s`).
- Each call sends the last ETag as If-None-Match; a 304, or a 200 with the body last
  written, is not written again. A changed body goes, untouched, to the source's raw topic
  (key = VIN, timestamp = receive time), awaited until Kafka acknowledged it.
- After each answered call, what was seen (ETag, body hash, call time) is written to the
  compacted `state_topic` (key `<source>/<vin>`), which is read back at start: after a
  restart unchanged vehicles are not re-written and calls resume on their schedule.

Metrics: `fleetstream_ingest_poll_calls_total{source,outcome}` (ok, not_modified,
rate_limited, error), `fleetstream_ingest_poll_changes_total{source}` and
`fleetstream_ingest_records_total{source,via="poll"}`.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import os
import threading
import time
from random import Random
from typing import Callable, Mapping

import aiohttp
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.poll_rules import (ApprovedVehicles, PollSettings, SeenState,
                                           backoff_s, body_hash, changed, first_due_ms,
                                           next_due_ms, parse_poll_settings)
from fleetstream.ingest.writer import KafkaUnavailable, RawWriter
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.topic_reader import (TopicReadError, topic_partitions,
                                                watermarks)
from fleetstream.schemas.activations import parse_activation
from fleetstream.schemas.timestamps import retry_after_s
from fleetstream.settings.ingest import IngestSettings

log = logging.getLogger(__name__)
#: how long the follower waits for a record before it looks at `stop` again
_FOLLOW_POLL_S = 0.2
#: how long a stopping poller waits for the calls in flight
_DRAIN_S = 10.0


def poll_settings(settings: IngestSettings, environ: Mapping[str, str] | None = None
                  ) -> dict[str, PollSettings]:
    """source -> its checked `poll:` section; ConfigError naming `sources.<s>.poll.<key>`."""
    environ = os.environ if environ is None else environ
    return {source.name: parse_poll_settings(source.poll, f"sources.{source.name}.poll",
                                             environ)
            for source in settings.sources.values() if source.poll is not None}


async def run_poller(settings: IngestSettings, polls: Mapping[str, PollSettings],
                     writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
    """Poll every source of `polls` (`poll_settings`, checked at start-up) until `stop` is
    set."""
    bootstrap = settings.bootstrap_servers
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, create_topics, bootstrap, [
        *(Topic(p.activations_topic, 1, {"cleanup.policy": "compact"}) for p in polls.values()),
        *(Topic(p.state_topic, 4, {"cleanup.policy": "compact"}) for p in polls.values())])
    followers = {topic: ActivationFollower(bootstrap, topic)
                 for topic in {p.activations_topic for p in polls.values()}}
    pollers = []
    for name, poll in polls.items():
        seen = await loop.run_in_executor(None, read_seen, bootstrap, poll.state_topic, name)
        pollers.append(SourcePoller(name, settings.sources[name].topic, poll,
                                    followers[poll.activations_topic], writer, metrics, seen))
    for follower in followers.values():
        follower.start(loop)
    try:
        await asyncio.gather(*(poller.run(stop) for poller in pollers))
    finally:
        for follower in followers.values():
            follower.close()


def read_seen(bootstrap: str, topic: str, source: str, timeout_s: float = 30.0
              ) -> dict[str, SeenState]:
    """vin -> what the poller of `source` last saw, from the state topic (all partitions
    read at once, up to their ends at the time of the call)."""
    prefix = f"{source}/".encode()
    seen: dict[str, SeenState] = {}
    consumer = _reader(bootstrap)
    try:
        behind, ends = _assign_from_the_beginning(consumer, bootstrap, topic)
        deadline = time.monotonic() + timeout_s
        while behind:
            if time.monotonic() > deadline:
                raise TopicReadError(f"{topic}: not read to its end within {timeout_s} s")
            message = consumer.poll(0.5)
            if message is None or _caught_up(message, behind, ends):
                continue
            key = message.key() or b""
            if key.startswith(prefix):
                _remember(seen, key[len(prefix):].decode(errors="replace"), message.value(),
                          topic)
            _caught_up(message, behind, ends, after=True)
    finally:
        consumer.close()
    return seen


def _remember(seen: dict[str, SeenState], vin: str, value: bytes | None, topic: str) -> None:
    if value is None:
        seen.pop(vin, None)
        return
    try:
        seen[vin] = SeenState.from_json(orjson.loads(value))
    except (orjson.JSONDecodeError, ValueError):
        log.warning("%s: unreadable poll state of %s ignored", topic, vin)


def _reader(bootstrap: str) -> Consumer:
    """A consumer that joins no group's work and commits nothing."""
    return Consumer({"bootstrap.servers": bootstrap,
                     "group.id": f"fleetstream-poller-{os.getpid()}-{time.monotonic_ns()}",
                     "enable.auto.commit": False, "enable.partition.eof": True,
                     "fetch.wait.max.ms": 100})


def _assign_from_the_beginning(consumer: Consumer, bootstrap: str, topic: str
                               ) -> tuple[set[int], dict[int, int]]:
    """Assign every partition of `topic` from its first record; the partitions holding
    records and each one's end offset now."""
    partitions = topic_partitions(consumer, bootstrap, topic)
    marks = {p: watermarks(consumer, TopicPartition(topic, p), 10.0) for p in partitions}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return {p for p, (low, high) in marks.items() if high > low}, \
        {p: high for p, (_, high) in marks.items()}


def _caught_up(message: Message, behind: set[int], ends: dict[int, int],
               after: bool = False) -> bool:
    """True for an event that is not a record (the end of a partition, an error), taking
    its partition off `behind` at its end; with `after`, the same for a record just read."""
    error = message.error()
    if error is not None:
        if error.code() == KafkaError._PARTITION_EOF:
            behind.discard(message.partition())
        else:
            log.warning("%s: %s", message.topic(), error)
        return True
    if after and message.offset() + 1 >= ends.get(message.partition(), 0):
        behind.discard(message.partition())
    return False


class ActivationFollower:
    """Reads an activations topic from its beginning, then live (a thread of its own), and
    tells its listeners in the event loop which VINs' approval changed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.vehicles = ApprovedVehicles()
        #: set once the topic was read up to its end at start
        self.caught_up = asyncio.Event()
        self.listeners: list[Callable[[str], None]] = []
        self._running = True
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._follow, name=f"follow-{self.topic}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self) -> None:
        consumer = _reader(self.bootstrap)
        try:
            behind, ends = _assign_from_the_beginning(consumer, self.bootstrap, self.topic)
            if not behind:
                self._in_loop(self.caught_up.set)
            while self._running:
                message = consumer.poll(_FOLLOW_POLL_S)
                if message is None or _caught_up(message, behind, ends):
                    if not behind and not self.caught_up.is_set():
                        self._in_loop(self.caught_up.set)
                    continue
                self._in_loop(self._apply, message.key(), message.value())
                if behind:
                    _caught_up(message, behind, ends, after=True)
                    if not behind:
                        self._in_loop(self.caught_up.set)
        except Exception:  # noqa: BLE001 - logged; the poller then calls nobody new
            log.exception("following %s failed", self.topic)
        finally:
            consumer.close()

    def _in_loop(self, function: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:            # the loop has closed: the poller has stopped
            self._running = False

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:                                  # a tombstone forgets the pair
            vin, _, application_id = key.decode(errors="replace").partition("/")
            self.vehicles.forget(vin, application_id)
        else:
            try:
                event = parse_activation(orjson.loads(value))
            except (orjson.JSONDecodeError, ValueError):
                return                                     # the job dead-letters it
            vin = event.vin
            self.vehicles.offer(event)
        for listener in self.listeners:
            listener(vin)


class _RateLimit:
    """At most `rate_per_s` starts a second, evenly spaced."""

    def __init__(self, rate_per_s: float) -> None:
        self.spacing_s = 1.0 / rate_per_s
        self.next_s = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        wait = self.next_s - now
        self.next_s = max(now, self.next_s) + self.spacing_s
        if wait > 0:
            await asyncio.sleep(wait)


class SourcePoller:
    """The calls of one source: schedule, limits, change detection, writes."""

    def __init__(self, source: str, topic: str, poll: PollSettings,
                 follower: ActivationFollower, writer: RawWriter, metrics: IngestMetrics,
                 seen: dict[str, SeenState], rng: Random | None = None) -> None:
        self.source = source
        self.topic = topic
        self.poll = poll
        self.follower = follower
        self.writer = writer
        self.metrics = metrics
        self.seen = seen
        self.rng = rng or Random()
        self.interval_ms = int(poll.interval_s * 1000)
        self.due: dict[str, int] = {}                 # vin -> when its next call is due
        self.failures: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(poll.concurrency)
        self._rate = _RateLimit(poll.rate_per_s)
        self._paused_until_ms = 0                      # 429: no call before this
        self._tasks: set[asyncio.Task[None]] = set()
        follower.listeners.append(self._approval_changed)

    # --- scheduling --------------------------------------------------------------------

    def _approval_changed(self, vin: str) -> None:
        if not self.poll.polls(vin):
            return
        if vin in self.follower.vehicles:
            if vin not in self.due:
                last = self.seen.get(vin)
                self._schedule(vin, first_due_ms(vin, _now_ms(), self.interval_ms,
                                                 last.polled_ms if last else None))
        else:
            self.due.pop(vin, None)                    # its heap entry is skipped
            self.failures.pop(vin, None)

    def _schedule(self, vin: str, due_ms: int) -> None:
        self.due[vin] = due_ms
        heapq.heappush(self._heap, (due_ms, vin))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([stopping, asyncio.ensure_future(self.follower.caught_up.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.poll.timeout_s),
                    headers=dict(self.poll.headers)) as session:
                while not stop.is_set():
                    vin = await self._next_due(stopping)
                    if vin is None:
                        continue
                    await self._slots.acquire()
                    if not await self._dispatch(session, vin, stopping):
                        self._slots.release()
                if self._tasks:
                    await asyncio.wait(self._tasks, timeout=_DRAIN_S)
        finally:
            stopping.cancel()

    async def _next_due(self, stopping: asyncio.Future) -> str | None:
        """The next vehicle whose call is due, once it is; None to look again."""
        while self._heap and self.due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)                  # revoked or rescheduled
        timeout = None
        if self._heap:
            due_ms, vin = self._heap[0]
            wait_ms = due_ms - _now_ms()
            if wait_ms <= 0:
                heapq.heappop(self._heap)
                return vin
            timeout = wait_ms / 1000
        self._wake.clear()
        waking = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait([waking, stopping], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        waking.cancel()
        return None

    async def _dispatch(self, session: aiohttp.ClientSession, vin: str,
                        stopping: asyncio.Future) -> bool:
        """Start `vin`'s call once the OEM's pause and rate allow; False if it was not.
        A 429 that comes while the call waits for the rate limit pauses it too."""
        while True:
            while (pause_ms := self._paused_until_ms - _now_ms()) > 0 and not stopping.done():
                await asyncio.wait([stopping], timeout=pause_ms / 1000)
            await self._rate.acquire()
            if self._paused_until_ms <= _now_ms() or stopping.done():
                break
        if stopping.done() or vin not in self.follower.vehicles or vin not in self.due:
            return False                               # revoked meanwhile: no call
        due_ms = self.due[vin]
        task = asyncio.create_task(self._call(session, vin, due_ms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    # --- one call ----------------------------------------------------------------------

    async def _call(self, session: aiohttp.ClientSession, vin: str, due_ms: int) -> None:
        seen = self.seen.get(vin, SeenState())
        headers = {"If-None-Match": seen.etag} if seen.etag else {}
        status, etag, body, retry_after = 0, None, b"", None
        try:
            async with session.get(self.poll.url.format(vin=vin), headers=headers) as response:
                body = await response.read()
                status, etag = response.status, response.headers.get("ETag")
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            log.info("%s: call for %s failed: %r", self.source, vin, error)
        finally:
            self._slots.release()
        received_ms = _now_ms()
        try:
            next_ms = await self._outcome(vin, seen, status, etag, body, retry_after,
                                          received_ms, due_ms)
        except KafkaUnavailable as error:
            log.warning("%s: %s not written, retried later: %s", self.source, vin, error)
            next_ms = self._backed_off(vin, received_ms)
        if vin in self.due and vin in self.follower.vehicles:
            self._schedule(vin, next_ms)

    async def _outcome(self, vin: str, seen: SeenState, status: int, etag: str | None,
                       body: bytes, retry_after: str | None, received_ms: int,
                       due_ms: int) -> int:
        """Count, write what changed, keep what was seen; when the next call is due."""
        calls = self.metrics.poll_calls
        if status == 429:
            calls.labels(source=self.source, outcome="rate_limited").inc()
            wait_s = retry_after_s(retry_after, received_ms / 1000, self.poll.interval_s)
            self._paused_until_ms = max(self._paused_until_ms,
                                        received_ms + int(wait_s * 1000))
            return self._paused_until_ms
        if status not in (200, 304):
            calls.labels(source=self.source, outcome="error").inc()
            return self._backed_off(vin, received_ms)
        calls.labels(source=self.source,
                     outcome="ok" if status == 200 else "not_modified").inc()
        self.failures.pop(vin, None)
        if changed(seen, status, etag, body):
            await self.writer.write(self.topic, body, vin.encode(), received_ms)
            self.metrics.poll_changes.labels(source=self.source).inc()
            self.metrics.records.labels(source=self.source, via="poll").inc()
            seen = SeenState(etag, body_hash(body), received_ms)
        else:
            seen = SeenState(seen.etag if status == 304 else etag or seen.etag,
                             seen.body_hash, received_ms)
        self.seen[vin] = seen
        await self.writer.write(self.poll.state_topic, orjson.dumps(seen.to_json()),
                                f"{self.source}/{vin}".encode(), received_ms)
        return next_due_ms(due_ms, received_ms, self.interval_ms)

    def _backed_off(self, vin: str, now_ms: int) -> int:
        failures = self.failures[vin] = self.failures.get(vin, 0) + 1
        return now_ms + int(1000 * backoff_s(failures, self.poll.interval_s,
                                             self.poll.max_backoff_s, self.rng))


def _now_ms() -> int:
    return int(time.time() * 1000)
