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
a disconnection by `SESSION_EXPIRY_S`) and manual acknowledgements: paho's network thread
hands each message to the event loop, which writes it to Kafka and only then sends its
PUBACK (PUBCOMP for QoS 2). A message not acknowledged when the bridge stops or the
connection drops is sent again by the broker on the next connection of the same
client id. Messages cross from paho's thread to the loop in batches: one
`call_soon_threadsafe` per batch that found the hand-over queue empty, not one per message.
The broker keeps at most `RECEIVE_MAXIMUM` messages unacknowledged in
flight, so while Kafka is away it simply stops sending.

Poison: a message over `max_message_bytes`, or whose topic has no level
`vin_topic_level`, goes to the dead letters and is acknowledged.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Any, Mapping
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetstream.ingest.bridges.base import Bridge
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
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        async def bridge(message: mqtt.MQTTMessage) -> None:
            try:
                key, poison = self.key_of(message.topic), None
            except ValueError as error:
                key, poison = None, str(error)
            if await self.forward(writer, metrics, message.payload, key, stop, poison):
                client.ack(message.mid, message.qos)

        arrived: deque[mqtt.MQTTMessage] = deque()

        def deliver(message: mqtt.MQTTMessage) -> None:   # on paho's network thread
            arrived.append(message)
            if len(arrived) == 1:   # else a take_arrived is scheduled and not done yet
                loop.call_soon_threadsafe(take_arrived)

        def take_arrived() -> None:   # on the event loop, in arrival order
            while arrived:
                message = arrived.popleft()
                if stop.is_set():
                    continue   # not acknowledged: the broker sends it again next session
                task = loop.create_task(bridge(message))
                pending.add(task)
                task.add_done_callback(pending.discard)

        client = self._client(deliver)
        client.loop_start()
        try:
            await stop.wait()
            if pending:
                await asyncio.gather(*pending)
        finally:
            client.disconnect()
            client.loop_stop()

    def _client(self, deliver: Any) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if self.login:
            client.username_pw_set(*self.login)
        if self.tls:
            client.tls_set()
        client.reconnect_delay_set(1, _RECONNECT_MAX_DELAY_S)
        client.on_message = lambda _client, _userdata, message: deliver(message)

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
