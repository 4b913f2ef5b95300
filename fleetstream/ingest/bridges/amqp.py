"""AmqpBridge: a RabbitMQ (AMQP 0-9-1) queue into the source's raw topic.

    sources:
      mercedes:
        amqp:
          url: "amqps://fleetstream@mq.example.com/oem"   # amqp:// or amqps://, vhost in the path
          password_env: MERCEDES_AMQP_PASSWORD   # the login's password, from the environment
          queue: mercedes.telemetry      # an existing queue (checked passively, never declared)
          prefetch: 500                  # unacknowledged messages in flight (default 500)
          vin_header: vin                # the key: this message header, when present

It consumes with manual acknowledgements (aio-pika on the event loop): each message is
written to Kafka and only then acknowledged. Acknowledgements are cumulative: once per
event-loop turn, one `basic.ack` with `multiple` set for the newest message whose
predecessors on its channel are all written too (AMQP's delivery tags are in order per
channel), instead of a frame per message. The broker sends at most
`prefetch` messages ahead, so while Kafka is away the bridge holds those and the queue
keeps the rest. Messages not acknowledged when the bridge stops or the connection
drops are requeued by the broker and delivered again (the connection reconnects by
itself).

A password in `url` is refused: secrets come only from environment variables.
Poison: a message over `max_message_bytes`, or whose `vin_header` is not text, goes to
the dead letters and is acknowledged.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Any, Mapping
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from fleetstream.ingest.bridges.base import Bridge
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.secrets import secret_from_env

log = logging.getLogger(__name__)

DEFAULT_PREFETCH = 500


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
        self.password = (secret_from_env(options["password_env"], f"{where}.password_env",
                                         os.environ if environ is None else environ).decode()
                         if "password_env" in options else None)

    def key_of(self, message: AbstractIncomingMessage) -> bytes | None:
        """The VIN header's value (None when not configured or absent); ValueError when not text."""
        if self.vin_header is None or self.vin_header not in (message.headers or {}):
            return None
        value = message.headers[self.vin_header]
        if isinstance(value, bytes):
            return value
        if isinstance(value, str) and value:
            return value.encode()
        raise ValueError(f"header {self.vin_header!r} (vin_header) is {value!r}, not a VIN")

    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        login = {"password": self.password} if self.password is not None else {}
        connection = await aio_pika.connect_robust(self.url, **login)
        pending: set[asyncio.Task[Any]] = set()
        acks = _CumulativeAcks(self.where)

        async def take(message: AbstractIncomingMessage) -> None:
            # aio-pika runs each delivery in a task of its own, in delivery order
            entry = acks.received(message)
            task = asyncio.current_task()
            if task is not None:
                pending.add(task)
            try:
                key, poison = self.key_of(message), None
            except ValueError as error:
                key, poison = None, str(error)
            try:
                if await self.forward(writer, metrics, message.body, key, stop, poison):
                    acks.written(entry)
            finally:
                pending.discard(task)  # type: ignore[arg-type]

        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.get_queue(self.queue, ensure=True)
            consumer_tag = await queue.consume(take, no_ack=False)
            await stop.wait()
            await queue.cancel(consumer_tag)
            if pending:
                await asyncio.gather(*pending)
            await acks.drain()
        finally:
            await connection.close()


class _CumulativeAcks:
    """Messages in delivery order and whether each is written; acknowledges the written
    prefix once per event-loop turn, one `basic.ack(multiple=True)` per channel."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.unacked: deque[list[Any]] = deque()      # [message, written]
        self.scheduled = False
        self.sending: set[asyncio.Task[None]] = set()

    def received(self, message: AbstractIncomingMessage) -> list[Any]:
        entry = [message, False]
        self.unacked.append(entry)
        return entry

    def written(self, entry: list[Any]) -> None:
        entry[1] = True
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._acknowledge)

    def _acknowledge(self) -> None:
        self.scheduled = False
        newest: dict[int, AbstractIncomingMessage] = {}
        while self.unacked and self.unacked[0][1]:
            message = self.unacked.popleft()[0]
            newest[id(message.channel)] = message
        for message in newest.values():
            task = asyncio.create_task(self._send(message))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    async def _send(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack(multiple=True)
        except Exception as error:  # the channel closed meanwhile: the broker resends them
            log.warning("%s: could not acknowledge messages (%s); they will come again",
                        self.where, error)

    async def drain(self) -> None:
        """Send what is written but not yet acknowledged, and wait for it."""
        self._acknowledge()
        if self.sending:
            await asyncio.gather(*self.sending)
