"""MqttSink: each document as one MQTT message, for applications that want it live.

Configuration (`sink:` of an application)::

    sink:
      type: mqtt
      host: broker.example.com           # default localhost
      port: 8883                         # default 1883
      topic: "live/fleetstream/{application_id}/{vin}"   # default live/fleetstream/{application_id}
      qos: 1                             # 0, 1 (default) or 2
      username: fleetstream              # optional: the pipeline's publisher login
      password: ...                      # only with username
      tls: true                          # or {ca_certs: ca.pem, certfile: c.pem, keyfile: k.pem}
      client_id: fleetstream-fleet-a     # optional; default: a random id per connection
      timeout: 10                        # seconds to connect and have a batch acknowledged
                                         # (a lost connection is waited for 0.2 s at most)

`topic` may use `{application_id}` and `{vin}`; its levels before the first
`{vin}` must be fixed, and an application's subscribers are granted exactly
those topics (`fleetstream.dev.mqtt_acl`). The payload is the document JSON.

`open()` starts connecting in the background (paho-mqtt 2.x network thread,
which also reconnects after a lost connection, at most 5 s apart). `write`
waits up to `timeout` for the first connection, but at most `LOST_WAIT_S` once a
connection was lost or refused (a broker that is down fails each attempt at once
instead of holding the bundle `timeout` seconds; Deliver tries again later),
publishes every document of the batch at once (the whole batch in flight:
paho's in-flight window is unlimited, so the batch's `max_records` bounds it),
and then waits once until the broker has acknowledged each (PUBACK for QoS 1,
PUBCOMP for QoS 2); otherwise it raises `MqttDeliveryError` and Deliver retries
the batch, so a document may arrive twice with the same `message_id`.

Order per vehicle with a whole batch in flight: MQTT 3.1.1 §4.6 makes every
topic an "Ordered Topic" by default; the broker sends PUBACKs in the order it
received the PUBLISHes [MQTT-4.6.0-2] and forwards them to subscribers, per
topic and QoS, in the order received from a client [MQTT-4.6.0-6]. One TCP
connection carries them in publish order, so a vehicle's documents (one topic)
arrive in batch order; only a retried batch repeats them (newest copies in
order).

Speed: a broker that leaves Nagle's algorithm on (Mosquitto's default,
`set_tcp_nodelay false`) holds back its later PUBACKs until the client
acknowledges the earlier TCP segment, which Linux delays up to 40 ms once the
client has stopped sending: about one 40 ms stall per batch, 1,900
documents/s in 100-document batches. The sink therefore asks for an immediate
TCP acknowledgement (`TCP_QUICKACK`, Linux) on each PUBACK it reads; brokers
are best run with `set_tcp_nodelay true` as well. A finite paho window would
cost a scan of every in-flight message per PUBACK (`_update_inflight`),
quadratic in the batch.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Mapping

import paho.mqtt.client as mqtt

from fleetstream.io.sinks.base import Sink
from fleetstream.schemas.delivery import Batch, Batching
from fleetstream.schemas.errors import ConfigError

DEFAULT_TOPIC = "live/fleetstream/{application_id}"
TLS_KEYS = frozenset({"ca_certs", "certfile", "keyfile"})
_RECONNECT_MAX_DELAY_S = 5
#: the longest `write` waits for a connection that was lost or refused
LOST_WAIT_S = 0.2
#: the socket option asking for an immediate TCP acknowledgement (Linux only)
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class MqttDeliveryError(ConnectionError):
    """The broker is unreachable, refused the login, or did not acknowledge in time."""


class MqttSink(Sink):
    """Documents as MQTT messages on a per-application (and per-vehicle) topic."""

    TYPE = "mqtt"
    DEFAULT_BATCHING = Batching(max_records=1000, max_bytes=1 << 20, max_delay_s=0.5)
    OPTIONAL = frozenset({"host", "port", "topic", "qos", "username", "password", "tls",
                          "client_id", "timeout"})

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        where = f"applications[{application_id}].sink"
        self.host = _typed(where, options, "host", str, "localhost")
        self.port = _typed(where, options, "port", int, 1883)
        if not 0 < self.port < 65536:
            raise ConfigError(f"{where}.port: expected 1-65535, got {self.port}")
        self.topic = _typed(where, options, "topic", str, DEFAULT_TOPIC)
        self.topic_filter = _topic_filter(where, self.topic, application_id)
        self.qos = options.get("qos", 1)
        if self.qos not in (0, 1, 2) or isinstance(self.qos, bool):
            raise ConfigError(f"{where}.qos: expected 0, 1 or 2, got {self.qos!r}")
        self.username = _typed(where, options, "username", str, None)
        self.password = _typed(where, options, "password", str, None)
        if self.password is not None and self.username is None:
            raise ConfigError(f"{where}.password: needs username")
        self.tls = options.get("tls", False)
        if not isinstance(self.tls, bool) and not (
                isinstance(self.tls, Mapping) and set(self.tls) <= TLS_KEYS):
            raise ConfigError(f"{where}.tls: expected true, false or a mapping with "
                              f"{', '.join(sorted(TLS_KEYS))}; got {self.tls!r}")
        self.client_id = _typed(where, options, "client_id", str, "")
        self.timeout = _typed(where, options, "timeout", (int, float), 10)
        if self.timeout <= 0:
            raise ConfigError(f"{where}.timeout: expected seconds > 0, got {self.timeout}")
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._refusal: str | None = None
        self._lost = False   # a connection was lost, refused or failed since open()

    def open(self) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv311)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(**(self.tls if isinstance(self.tls, Mapping) else {}))
        client.reconnect_delay_set(1, _RECONNECT_MAX_DELAY_S)
        # 0: no window; the whole batch is in flight (paho's default is 20)
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        if self.qos:
            client.on_publish = _acknowledge_at_once
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._lost = False
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self._client = client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refusal = str(reason_code)
            self._lost = True
        else:
            self._refusal = None
            self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        self._lost = True

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._lost = True

    def write(self, batch: Batch) -> None:
        if self._client is None:
            self.open()
        deadline = time.monotonic() + self.timeout
        waited = self._wait_connected()
        if waited is not None:
            reason = f"refused: {self._refusal}" if self._refusal else "not reachable"
            raise MqttDeliveryError(f"MQTT broker {self.host}:{self.port} {reason} "
                                    f"(waited {waited:.1f} s)")
        sent = [self._client.publish(self.topic.format(application_id=batch.application_id,
                                                       vin=record.vin),
                                     record.document, qos=self.qos)
                for record in batch.records]
        for message in sent:
            try:
                message.wait_for_publish(max(deadline - time.monotonic(), 0.001))
            except (RuntimeError, ValueError) as error:
                raise MqttDeliveryError(f"MQTT broker {self.host}:{self.port}: {error}") from None
            if not message.is_published():
                raise MqttDeliveryError(
                    f"MQTT broker {self.host}:{self.port} did not acknowledge "
                    f"{len(sent)} message(s) of batch {batch.batch_id} within {self.timeout} s")

    def _wait_connected(self) -> float | None:
        """None once connected; else the seconds waited: `timeout`, or `LOST_WAIT_S` once
        a connection was lost, refused or failed."""
        started = time.monotonic()
        while not self._connected.wait(0.05):
            waited = time.monotonic() - started
            if waited >= self.timeout or (self._lost and waited >= LOST_WAIT_S):
                return waited
        return None

    def close(self) -> None:
        """Disconnect; the network thread is stopped in the background, since joining it
        waits out paho's reconnect backoff (~0.5 s a close measured against a broker that
        is down), which would hold the worker's bundle."""
        if self._client is not None:
            self._client.disconnect()
            threading.Thread(target=self._client.loop_stop, daemon=True).start()
            self._client = None
            self._connected.clear()


def _acknowledge_at_once(client: mqtt.Client, userdata: Any, mid: int, reason_code: Any,
                         properties: Any) -> None:
    """On each PUBACK/PUBCOMP read: acknowledge the broker's TCP segment now (Linux), so
    a broker with Nagle on sends the next acknowledgements without a delayed-ACK stall."""
    sock = client.socket()
    if _QUICKACK is not None and sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:   # the connection is closing; nothing to acknowledge
            pass


_KIND_NAMES = {str: "a string", int: "a whole number", (int, float): "a number"}


def _typed(where: str, options: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
           default: Any) -> Any:
    value = options.get(key, default)
    if value is not default and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}: expected {_KIND_NAMES[kind]}, got {value!r}")
    return value


def _topic_filter(where: str, topic: str, application_id: str) -> str:
    """The MQTT filter matching every topic `topic` renders to for this application."""
    try:
        topic.format(application_id=application_id, vin="VIN")
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(f"{where}.topic: {topic!r} may use only {{application_id}} and "
                          f"{{vin}} ({error!r})") from None
    if any(wildcard in topic for wildcard in "+#") or not topic:
        raise ConfigError(f"{where}.topic: {topic!r} must be a topic name, without + or #")
    fixed = []
    for level in topic.split("/"):
        if "{vin}" in level:
            break
        fixed.append(level.format(application_id=application_id))
    if not fixed:
        raise ConfigError(f"{where}.topic: {topic!r} must begin with a level that is not "
                          f"{{vin}}, so that an application's topics can be told apart")
    return "/".join(fixed) + "/#"
