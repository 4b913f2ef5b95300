"""The Pub/Sub bridge: a Google Pub/Sub subscription's messages to the source's raw topic.

    sources:
      tesla:
        pubsub: {project: fleet-prod, subscription: tesla-telemetry, vin_attribute: vin}

Options: `project` and `subscription` (the subscription exists already: the bridge
creates nothing at Google), `emulator_host` (HOST:PORT of a local emulator, plaintext and
no credentials; without it the client follows `PUBSUB_EMULATOR_HOST`, else Google's
default credentials), `max_messages` (per pull, default 100), `vin_attribute` (the message
attribute holding the VIN; default none), `max_payload_bytes` (default 700,000).

Synchronous pulls on the asyncio client (`SubscriberAsyncClient`): the messages of one
pull are written concurrently, and each is acknowledged only after `writer.write` returned,
i.e. after Kafka acknowledged its record (value = the message data as published; key = the
`vin_attribute` attribute, else the ordering key, else none; timestamp = receive time).
When Kafka does not take a record in time, its message is nacked (ack deadline set to 0,
so Pub/Sub redelivers it) and the bridge pauses before pulling again, longer each time up
to MAX_BACKOFF_S. A message over `max_payload_bytes` is poison: it goes to
`writer.dead_letter` with the reason and is then acknowledged. The default limit leaves
room for the dead letter itself, whose payload may be base64 (4/3 the size) and must stay
under the producer's 1,000,000-byte record limit. Delivery is at least once: a message
whose ack is lost after the write comes back and is written again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar, Mapping

from google.api_core import exceptions as google_errors

from fleetstream.ingest.bridges.base import Bridge
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import KafkaUnavailable, RawWriter
from fleetstream.schemas.errors import ConfigError

LOG = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 100
DEFAULT_MAX_PAYLOAD_BYTES = 700_000
#: how long one pull waits for messages before the bridge checks `stop` again
PULL_TIMEOUT_S = 5.0
#: pause after a pull that found nothing (the emulator answers at once)
IDLE_PAUSE_S = 0.1
#: pauses while Kafka is away or Pub/Sub fails: 0.5 s doubling up to this
MAX_BACKOFF_S = 30.0
#: Pub/Sub errors worth retrying (the service or the network), as opposed to a wrong setting
_TRANSIENT = (google_errors.ServiceUnavailable, google_errors.DeadlineExceeded,
              google_errors.InternalServerError, google_errors.Aborted,
              google_errors.ResourceExhausted, google_errors.Unknown)


class PubSubBridge(Bridge):
    """Pulls a subscription; acknowledges a message after Kafka acknowledged its record."""

    KIND: ClassVar[str] = "pubsub"
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"project", "subscription"})
    OPTIONAL: ClassVar[frozenset[str]] = frozenset(
        {"emulator_host", "max_messages", "vin_attribute", "max_payload_bytes"})

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str) -> None:
        super().__init__(source, topic, options, where)
        for key in ("project", "subscription"):
            if not isinstance(options[key], str) or not options[key] or "/" in options[key]:
                raise ConfigError(f"{where}.{key}: expected a Pub/Sub {key} id, got "
                                  f"{options[key]!r}")
        self.subscription = (f"projects/{options['project']}/subscriptions/"
                             f"{options['subscription']}")
        host = options.get("emulator_host")
        if host is not None and (not isinstance(host, str) or ":" not in host):
            raise ConfigError(f"{where}.emulator_host: expected HOST:PORT, got {host!r}")
        self.emulator_host: str | None = host
        self.max_messages = _positive(options, "max_messages", DEFAULT_MAX_MESSAGES, where)
        self.max_payload_bytes = _positive(options, "max_payload_bytes",
                                           DEFAULT_MAX_PAYLOAD_BYTES, where)
        vin_attribute = options.get("vin_attribute")
        if vin_attribute is not None and (not isinstance(vin_attribute, str) or not vin_attribute):
            raise ConfigError(f"{where}.vin_attribute: expected an attribute name, got "
                              f"{vin_attribute!r}")
        self.vin_attribute: str | None = vin_attribute

    def client(self) -> Any:
        """A `SubscriberAsyncClient` for the emulator or for Google."""
        from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
        if self.emulator_host is None:
            return SubscriberAsyncClient()
        import grpc
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport
        channel = grpc.aio.insecure_channel(self.emulator_host)
        return SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel))

    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        client = self.client()
        backoff = 0.0
        try:
            while not stop.is_set():
                if backoff:
                    await _sleep_unless(stop, backoff)
                try:
                    received = await self._pull(client, stop)
                    failed = await self._bridge(client, received, writer, metrics)
                except _TRANSIENT as error:
                    LOG.warning("%s: Pub/Sub failed (%s); retrying", self.where, error)
                    failed = True
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF_S) if failed else 0.0
        finally:
            await client.transport.close()

    async def _pull(self, client: Any, stop: asyncio.Event) -> list[Any]:
        """One pull's messages; none when `stop` is set first (those come back later)."""
        pull = asyncio.ensure_future(client.pull(
            request={"subscription": self.subscription, "max_messages": self.max_messages},
            timeout=PULL_TIMEOUT_S, retry=None))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({pull, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not pull.done():
            pull.cancel()
            return []
        try:
            received = list(pull.result().received_messages)
        except google_errors.DeadlineExceeded:
            return []
        if not received:
            await _sleep_unless(stop, IDLE_PAUSE_S)
        return received

    async def _bridge(self, client: Any, received: list[Any], writer: RawWriter,
                      metrics: IngestMetrics) -> bool:
        """Write one pull's messages; ack the written, nack the rest; True if any failed."""
        if not received:
            return False
        outcomes = await asyncio.gather(*(self._write(m.message, writer, metrics)
                                          for m in received))
        done = [m.ack_id for m, ok in zip(received, outcomes) if ok]
        retry = [m.ack_id for m, ok in zip(received, outcomes) if not ok]
        if done:
            await client.acknowledge(request={"subscription": self.subscription,
                                              "ack_ids": done})
        if retry:
            await client.modify_ack_deadline(request={
                "subscription": self.subscription, "ack_ids": retry, "ack_deadline_seconds": 0})
        return bool(retry)

    async def _write(self, message: Any, writer: RawWriter, metrics: IngestMetrics) -> bool:
        """Write one message (or its dead letter); True once Kafka acknowledged it."""
        received_ms = int(time.time() * 1000)
        data = bytes(message.data)
        try:
            if len(data) > self.max_payload_bytes:
                await writer.dead_letter(
                    self.source, self.KIND, f"payload of {len(data)} bytes is over "
                    f"max_payload_bytes {self.max_payload_bytes}", data, received_ms)
                metrics.dead_letters.labels(source=self.source, via=self.KIND).inc()
                return True
            with metrics.produce_latency.time():
                await writer.write(self.topic, data, self._key(message), received_ms)
        except KafkaUnavailable as error:
            LOG.warning("%s: message %s not written (%s); nacked", self.where,
                        message.message_id, error)
            return False
        metrics.records.labels(source=self.source, via=self.KIND).inc()
        return True

    def _key(self, message: Any) -> bytes | None:
        vin = message.attributes.get(self.vin_attribute) if self.vin_attribute else None
        return (vin or message.ordering_key or "").encode() or None


def _positive(options: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = options.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}.{key}: expected a whole number >= 1, got {value!r}")
    return value


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
