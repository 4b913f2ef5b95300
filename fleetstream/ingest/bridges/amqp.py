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
written to Kafka and only then acknowledged (`basic.ack`). The broker sends at most
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
        pending: set[asyncio.Task[None]] = set()

        async def bridge(message: AbstractIncomingMessage) -> None:
            try:
                key, poison = self.key_of(message), None
            except ValueError as error:
                key, poison = None, str(error)
            if not await self.forward(writer, metrics, message.body, key, stop, poison):
                return
            try:
                await message.ack()
            except Exception as error:  # the channel closed meanwhile: the broker resends it
                log.warning("%s: could not acknowledge a message (%s); it will come again",
                            self.where, error)

        async def take(message: AbstractIncomingMessage) -> None:
            task = asyncio.create_task(bridge(message))
            pending.add(task)
            task.add_done_callback(pending.discard)

        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.get_queue(self.queue, ensure=True)
            consumer_tag = await queue.consume(take, no_ack=False)
            await stop.wait()
            await queue.cancel(consumer_tag)
            if pending:
                await asyncio.gather(*pending)
        finally:
            await connection.close()
