"""AmqpBridge: a RabbitMQ (AMQP 0-9-1) queue into the source's raw topic.

    sources:
      mercedes:
        amqp:
          url: "amqps://fleetstream@mq.example.com/oem"   # amqp:// or amqps://, vhost in the path
          password_env: MERCEDES_AMQP_PASSWORD   # the login's password, from the environment
          queue: mercedes.telemetry      # an existing queue (checked passively, never declared)
          prefetch: 500                  # unacknowledged messages in flight (default 500)
          vin_header: vin                # the key: this message header, when present

It consumes with manual acknowledgements through pika's asyncio adapter, on the event
loop (pika's consume path costs about a quarter of aio-pika's CPU per message,
docs/benchmarks.md): each message is handed to the producer from the delivery callback
(`Forwarding`: no task per message) and acknowledged after Kafka's ack.
Acknowledgements are cumulative: once per event-loop turn, one `basic.ack` with
`multiple` set for the newest message whose predecessors are all written too (AMQP's
delivery tags are in order per channel), instead of a frame per message. The broker
sends at most `prefetch` messages ahead, so while Kafka is away the bridge holds those
and the queue keeps the rest. Messages not acknowledged when the bridge stops or the
connection drops are requeued by the broker and delivered again; the bridge connects
again with backoff (1 s doubling to 10 s), also when the broker is not up at its start.
A queue that does not exist stops the bridge with a ConfigError naming `queue`.

A password in `url` is refused: secrets come only from environment variables.
Poison: a message over `max_message_bytes`, or whose `vin_header` is not text, goes to
the dead letters and is acknowledged.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections import deque
from functools import partial
from typing import Any, Callable, Mapping
from urllib.parse import unquote, urlsplit

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel
from pika.exceptions import ChannelClosedByBroker

from fleetstream.ingest.bridges.base import Bridge, Forwarding, wait_for_stop
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.secrets import secret_from_env

log = logging.getLogger(__name__)

DEFAULT_PREFETCH = 500
#: after a lost or refused connection: the first pause before connecting again, the longest
RECONNECT_FIRST_S, RECONNECT_MAX_S = 1.0, 10.0
#: the AMQP reply code of a passive declare of a queue that does not exist
_NOT_FOUND = 404


class AmqpBridge(Bridge):
    """One RabbitMQ queue, each message acknowledged after Kafka's ack."""

    KIND = "amqp"
    REQUIRED = frozenset({"url", "queue"})
    OPTIONAL = frozenset({"prefetch", "vin_header", "password_env"})

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(source, topic, options, where)
        self.url = self.option("url", str)
        parts = urlsplit(self.url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigError(f"{where}.url: expected amqp[s]://[USER@]HOST[:PORT][/VHOST], "
                              f"got {self.url!r}")
        if parts.password is not None:
            raise ConfigError(f"{where}.url: holds a password; give it through password_env "
                              f"(the name of an environment variable) instead")
        self.queue = self.option("queue", str)
        self.prefetch = self.option("prefetch", int, DEFAULT_PREFETCH, minimum=1)
        self.vin_header = self.option("vin_header", str)
        password = (secret_from_env(options["password_env"], f"{where}.password_env",
                                    os.environ if environ is None else environ).decode()
                    if "password_env" in options else "guest")
        tls = parts.scheme == "amqps"
        try:
            port = parts.port or (5671 if tls else 5672)
        except ValueError:
            raise ConfigError(f"{where}.url: bad port in {self.url!r}") from None
        self.parameters = pika.ConnectionParameters(
            parts.hostname, port, unquote(parts.path[1:]) or "/",
            pika.PlainCredentials(unquote(parts.username or "guest"), password),
            ssl_options=pika.SSLOptions(ssl.create_default_context(), parts.hostname)
            if tls else None)

    def key_of(self, headers: Mapping[str, Any] | None) -> bytes | None:
        """The VIN header's value (None when not configured or absent); ValueError when not text."""
        if self.vin_header is None or self.vin_header not in (headers or {}):
            return None
        value = headers[self.vin_header]    # type: ignore[index]
        if isinstance(value, bytes):
            return value
        if isinstance(value, str) and value:
            return value.encode()
        raise ValueError(f"header {self.vin_header!r} (vin_header) is {value!r}, not a VIN")

    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        forwarding = Forwarding(self, writer, metrics, stop)

        def take(session: _Session, _channel: Channel, method: Any, properties: Any,
                 body: bytes) -> None:
            if stop.is_set():
                return   # not acknowledged: requeued when the connection closes
            try:
                key, poison = self.key_of(properties.headers), None
            except ValueError as error:
                key, poison = None, str(error)
            forwarding.send(body, key, session.received(method.delivery_tag), poison)

        delay, session = RECONNECT_FIRST_S, None
        try:
            while not stop.is_set():
                session = _Session(self)
                try:
                    await session.open(partial(take, session))
                except ChannelClosedByBroker as error:
                    if error.reply_code == _NOT_FOUND:
                        raise ConfigError(f"{self.where}.queue: no queue {self.queue!r} at the "
                                          f"broker; create it (the bridge never declares "
                                          f"one)") from None
                    raise
                except (pika.exceptions.AMQPError, OSError) as error:
                    log.warning("%s: cannot consume from %s (%r); again in %.0f s", self.where,
                                self.queue, error, delay)
                    await wait_for_stop(stop, delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                delay = RECONNECT_FIRST_S
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait([stopped, session.closed], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not stop.is_set():
                    log.warning("%s: connection lost (%s); connecting again", self.where,
                                session.closed.result())
                    await wait_for_stop(stop, delay)
            await forwarding.drain()
            if session is not None:
                session.acknowledge()
        finally:
            if session is not None:
                await session.close()


class _Session:
    """One connection and channel consuming the queue. Knows its deliveries in order and
    whether each is written; acknowledges the written prefix once per event-loop turn,
    with one `basic.ack(multiple=True)`. A delivery written after its channel closed is
    not acknowledged: the broker has requeued it already."""

    def __init__(self, bridge: AmqpBridge) -> None:
        self.bridge = bridge
        self.loop = asyncio.get_running_loop()
        #: done with the reason once the connection is closed
        self.closed: asyncio.Future[Exception] = self.loop.create_future()
        self.channel: Channel | None = None
        self.unacked: deque[list[Any]] = deque()      # [delivery tag, written]
        self.scheduled = False

    async def open(self, take: Callable[..., None]) -> None:
        """Connect, open the channel, check the queue and start consuming into `take`."""
        opened: asyncio.Future[Channel] = self.loop.create_future()

        def on_close(_connection: Any, reason: Exception) -> None:
            _settle(opened, error=reason)
            _settle(self.closed, reason)

        self.connection = AsyncioConnection(
            self.bridge.parameters, custom_ioloop=self.loop,
            on_open_callback=lambda connection: connection.channel(
                on_open_callback=lambda channel: _settle(opened, channel)),
            on_open_error_callback=lambda _connection, error: (
                _settle(opened, error=error if isinstance(error, Exception)
                        else pika.exceptions.AMQPConnectionError(error)),
                _settle(self.closed, pika.exceptions.AMQPConnectionError(error))),
            on_close_callback=on_close)
        channel = self.channel = await opened
        await self._call(channel, channel.basic_qos, prefetch_count=self.bridge.prefetch)
        await self._call(channel, channel.queue_declare, self.bridge.queue, passive=True)
        channel.basic_consume(self.bridge.queue, take)

    def received(self, delivery_tag: int) -> Callable[[], None]:
        """Note a delivery; the returned callable marks it written."""
        entry = [delivery_tag, False]
        self.unacked.append(entry)
        return partial(self._written, entry)

    def _written(self, entry: list[Any]) -> None:
        entry[1] = True
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.acknowledge)

    def acknowledge(self) -> None:
        """Acknowledge every delivery written so far whose predecessors are written too."""
        self.scheduled = False
        newest = None
        while self.unacked and self.unacked[0][1]:
            newest = self.unacked.popleft()[0]
        if newest is not None and self.channel is not None and self.channel.is_open:
            self.channel.basic_ack(newest, multiple=True)

    async def close(self) -> None:
        """Close the connection (what is not acknowledged is requeued) and wait for it."""
        if not self.closed.done() and not self.connection.is_closing:
            self.connection.close()
        await asyncio.wait([self.closed], timeout=5)

    async def _call(self, channel: Channel, method: Callable[..., None], *args: Any,
                    **kwargs: Any) -> None:
        """Call a pika channel method with a reply and wait for it; the channel's close
        reason when it closes first (e.g. a passive declare of a queue that is not there)."""
        replied: asyncio.Future[Any] = self.loop.create_future()
        channel.add_on_close_callback(lambda _channel, reason: _settle(replied, error=reason))
        method(*args, callback=lambda frame: _settle(replied, frame), **kwargs)
        await replied


def _settle(future: asyncio.Future[Any], result: Any = None, error: Exception | None = None
            ) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
