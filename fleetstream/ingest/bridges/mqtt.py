"""MqttBridge: an MQTT subscription (e.g. BMW CarData's stream) into the source's raw topic.

    sources:
      bmw:
        mqtt:
          url: "mqtts://customer.streaming-cardata.bmwgroup.com:9000"   # mqtt:// or mqtts://
          topic: "bmw/+/telemetry"       # a subscription filter; + and # allowed
          qos: 1                         # 1 (default) or 2; 0 cannot be acknowledged late
          client_id: fleetstream-bmw     # default fleetstream-ingest-<source>; keep it stable
          username_env: BMW_MQTT_USER    # optional login, read from the environment
          password_env: BMW_MQTT_PASSWORD
          vin_topic_level: 1             # the key: level 1 of bmw/<VIN>/telemetry

It connects with MQTT 5, a persistent session (clean start off, a session that outlives
a disconnection by `SESSION_EXPIRY_S`) and manual acknowledgements. paho runs on the
event loop, not in a thread of its own (paho's external-loop interface: the loop reads and
writes its socket, `loop_misc` keeps the connection alive, `PahoOnLoop` reconnects with
backoff): each message is handed to the producer as it is read and its PUBACK (PUBCOMP
for QoS 2) sent from Kafka's delivery report, with no thread hand-over, task or
wake-up per message. A message not acknowledged when the bridge stops or the
connection drops is sent again by the broker on the next connection of the same
client id. The broker keeps at most `RECEIVE_MAXIMUM` messages unacknowledged in
flight, so while Kafka is away it simply stops sending.

Poison: a message over `max_message_bytes`, or whose topic has no level
`vin_topic_level`, goes to the dead letters and is acknowledged.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from functools import partial
from typing import Any, Mapping
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetstream.ingest.bridges.base import Bridge, Forwarding, wait_for_stop
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.secrets import secret_from_env

log = logging.getLogger(__name__)

#: how long the broker keeps our session (subscription, unacknowledged messages) while we are away
SESSION_EXPIRY_S = 7 * 24 * 3600
#: unacknowledged QoS 1/2 messages the broker may have in flight to us (MQTT 5 Receive Maximum)
RECEIVE_MAXIMUM = 2000
_RECONNECT_MAX_DELAY_S = 10


class MqttBridge(Bridge):
    """One MQTT subscription, acknowledged message by message after Kafka's ack."""

    KIND = "mqtt"
    REQUIRED = frozenset({"url", "topic"})
    OPTIONAL = frozenset({"qos", "client_id", "username_env", "password_env",
                          "vin_topic_level"})

    def __init__(self, source: str, topic: str, options: Mapping[str, Any], where: str,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(source, topic, options, where)
        url = urlsplit(self.option("url", str))
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ConfigError(f"{where}.url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT],"
                              f" got {options['url']!r}")
        self.host, self.tls = url.hostname, url.scheme == "mqtts"
        try:
            self.port = url.port or (8883 if self.tls else 1883)
        except ValueError:
            raise ConfigError(f"{where}.url: bad port in {options['url']!r}") from None
        self.subscription = self.option("topic", str)
        self.qos = self.option("qos", int, 1, choices=(1, 2))
        self.client_id = self.option("client_id", str, f"fleetstream-ingest-{source}")
        self.vin_level = self.option("vin_topic_level", int, None, minimum=0)
        environ = os.environ if environ is None else environ
        self.login: tuple[str, str | None] | None = None
        if "password_env" in options and "username_env" not in options:
            raise ConfigError(f"{where}.password_env: needs username_env")
        if "username_env" in options:
            self.login = (
                secret_from_env(options["username_env"], f"{where}.username_env", environ).decode(),
                secret_from_env(options["password_env"], f"{where}.password_env", environ).decode()
                if "password_env" in options else None)

    def key_of(self, topic: str) -> bytes | None:
        """The VIN at `vin_topic_level` of `topic` (None when not configured); Poison when absent."""
        if self.vin_level is None:
            return None
        levels = topic.split("/")
        if self.vin_level >= len(levels) or not levels[self.vin_level]:
            raise ValueError(f"topic {topic!r} has no level {self.vin_level} (vin_topic_level)")
        return levels[self.vin_level].encode()

    async def run(self, writer: RawWriter, metrics: IngestMetrics, stop: asyncio.Event) -> None:
        forwarding = Forwarding(self, writer, metrics, stop)

        def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
            if stop.is_set():
                return   # not acknowledged: the broker sends it again next session
            try:
                key, poison = self.key_of(message.topic), None
            except ValueError as error:
                key, poison = None, str(error)
            forwarding.send(message.payload, key,
                            partial(paho.ack, paho.connection, message.mid, message.qos), poison)

        paho = PahoOnLoop(self._client(on_message), self.where)
        try:
            await paho.serve(stop)
            await forwarding.drain()
        finally:
            await paho.disconnect()

    def _client(self, on_message: Any) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if self.login:
            client.username_pw_set(*self.login)
        if self.tls:
            client.tls_set()
        client.on_message = on_message

        def on_connect(client: mqtt.Client, _userdata: Any, flags: Any, reason: Any,
                       _properties: Any) -> None:
            if reason.is_failure:
                log.error("%s: broker %s:%s refused the connection: %s", self.where, self.host,
                          self.port, reason)
            else:   # again on every connection: the session may have expired meanwhile
                client.subscribe(self.subscription, qos=self.qos)

        client.on_connect = on_connect
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        client.connect_async(self.host, self.port, keepalive=30, clean_start=False,
                             properties=properties)
        return client


class PahoOnLoop:
    """A paho client served by the running event loop instead of a network thread of its
    own: its socket is read when readable and written while paho has something to send
    (paho's external-loop interface), `loop_misc` keeps the connection alive, and `serve`
    connects again with backoff after the connection drops. Callbacks (`on_message`, ...)
    run on the loop. The client must be configured with `connect_async` first."""

    #: packets read per readiness callback at most, while each brings a message
    READ_BURST = 64

    def __init__(self, client: mqtt.Client, where: str) -> None:
        self.client, self.where = client, where
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        #: the socket's descriptor: the loop knows it by that, also after paho closed it
        self.fd = -1
        self.closed = asyncio.Event()
        self.closed.set()
        #: how many connections were opened so far: the current one's number
        self.connection = 0
        self.received = 0
        handle = client.on_message

        def on_message(*args: Any) -> None:
            self.received += 1
            handle(*args)

        client.on_message = on_message
        client.on_socket_open = lambda _c, _u, sock: self._on_loop(self._open, sock.fileno())
        client.on_socket_close = lambda _c, _u, _sock: self._on_loop(self._close)
        client.on_socket_register_write = lambda _c, _u, _sock: self._on_loop(
            lambda: self.loop.add_writer(self.fd, client.loop_write))
        client.on_socket_unregister_write = lambda _c, _u, _sock: self._on_loop(
            lambda: self.loop.remove_writer(self.fd))

    async def serve(self, stop: asyncio.Event) -> None:
        """Connect (its blocking part in a thread), keep the connection alive, and connect
        again with backoff after it drops, until `stop` is set; the connection stays open."""
        delay = 1.0
        while not stop.is_set():
            try:
                await self.loop.run_in_executor(None, self.client.reconnect)
            except (OSError, ValueError) as error:
                log.warning("%s: cannot connect to %s:%s (%s); again in %.0f s", self.where,
                            self.client.host, self.client.port, error, delay)
                if await wait_for_stop(stop, delay):
                    return
                delay = min(delay * 2, _RECONNECT_MAX_DELAY_S)
                continue
            delay = 1.0
            while not self.closed.is_set():
                self.client.loop_misc()     # PINGREQ when due; closes a dead connection
                if await wait_for_stop(stop, 1.0):
                    return
            log.warning("%s: connection to %s:%s lost; connecting again", self.where,
                        self.client.host, self.client.port)
            if await wait_for_stop(stop, delay):
                return

    async def disconnect(self) -> None:
        """Send DISCONNECT (after what paho queued before it, e.g. acknowledgements) and close."""
        if self.closed.is_set():
            return
        self.client.disconnect()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 2.0)
        sock = self.client.socket()
        if sock is not None and not self.closed.is_set():   # the broker did not take it
            self._close()
            sock.close()

    def ack(self, connection: int, mid: int, qos: int) -> None:
        """Acknowledge message `mid` received on connection number `connection`; not when
        that connection is gone: the broker sends the message again, and its packet id may
        name another message on the new connection."""
        if connection == self.connection and not self.closed.is_set():
            self.client.ack(mid, qos)

    def _on_loop(self, action: Any, *args: Any) -> None:
        if threading.get_ident() == self.thread:
            action(*args)
        else:
            self.loop.call_soon_threadsafe(action, *args)

    def _open(self, fd: int) -> None:
        self.fd = fd
        self.connection += 1
        self.closed.clear()
        self.loop.add_reader(fd, self._readable)

    def _close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.closed.set()

    def _readable(self) -> None:
        for _ in range(self.READ_BURST):
            before = self.received
            self.client.loop_read()
            sock = self.client.socket()
            if sock is None:
                return
            if self.received == before and not getattr(sock, "pending", lambda: 0)():
                return
        self.loop.call_soon(self._readable)   # more may wait, TLS's decrypted bytes unseen by epoll
