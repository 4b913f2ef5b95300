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
                                         # (a broker that refuses fails the write at once)

`topic` may use `{application_id}` and `{vin}`; its levels before the first
`{vin}` must be fixed, and an application's subscribers are granted exactly
those topics (`fleetstream.dev.mqtt_acl`). The payload is the document JSON.

`write` connects when it has no usable connection (the first time, after a
failure, or when the broker closed an idle one): within `timeout`, or at once
failing when the broker refuses the TCP connection or the login. It then
publishes every document of the batch at once, in one go of PUBLISH packets
(the whole batch in flight; the batch's `max_records` bounds it), and waits once
until the broker has acknowledged each (PUBACK for QoS 1, PUBCOMP for QoS 2),
all within `timeout`; otherwise it raises `MqttDeliveryError`, drops the
connection and Deliver retries the batch on a new one, so a document may arrive
twice with the same `message_id`. The MQTT 3.1.1 client is our own
(`fleetstream.io.sinks.mqtt_wire`): paho-mqtt's bookkeeping per message held the
sink to about 5,000 documents/s (docs/benchmarks.md, issue #19).

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
documents/s in 100-document batches. The client therefore asks for an immediate
TCP acknowledgement (`TCP_QUICKACK`, Linux) after each read; brokers are best
run with `set_tcp_nodelay true` as well.
"""
from __future__ import annotations

import ssl
import time
from typing import Any, Mapping

from fleetstream.io.sinks.base import Sink
from fleetstream.io.sinks.mqtt_wire import MqttRefused, MqttTimeout, MqttWireError, Publisher
from fleetstream.schemas.delivery import Batch, Batching
from fleetstream.schemas.errors import ConfigError

DEFAULT_TOPIC = "live/fleetstream/{application_id}"
TLS_KEYS = frozenset({"ca_certs", "certfile", "keyfile"})
KEEPALIVE_S = 30


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
        self._publisher: Publisher | None = None

    def open(self) -> None:
        """Prepare the client (TLS files are read here); the first write connects."""
        self._publisher = Publisher(self.host, self.port, client_id=self.client_id,
                                    keepalive_s=KEEPALIVE_S, username=self.username,
                                    password=self.password, ssl_context=_ssl_context(self.tls))

    def write(self, batch: Batch) -> None:
        if self._publisher is None:
            self.open()
        assert self._publisher is not None
        deadline = time.monotonic() + self.timeout
        topics = {vin: self.topic.format(application_id=batch.application_id, vin=vin)
                  for vin in {record.vin for record in batch.records}}
        messages = [(topics[record.vin], record.document) for record in batch.records]
        where = f"MQTT broker {self.host}:{self.port}"
        try:
            if not self._publisher.healthy():
                self._publisher.connect(deadline)
        except MqttRefused as error:
            raise MqttDeliveryError(f"{where} refused: {error}") from None
        except MqttWireError as error:
            raise MqttDeliveryError(f"{where} not reachable: {error}") from None
        try:
            self._publisher.publish(messages, self.qos, deadline)
        except MqttTimeout:
            raise MqttDeliveryError(
                f"{where} did not acknowledge {len(messages)} message(s) of batch "
                f"{batch.batch_id} within {self.timeout} s") from None
        except MqttWireError as error:
            raise MqttDeliveryError(f"{where}: {error} during batch {batch.batch_id}") from None

    def close(self) -> None:
        """Say DISCONNECT and close the connection, when there is one."""
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None


def _ssl_context(tls: bool | Mapping[str, str]) -> ssl.SSLContext | None:
    """The TLS settings of `tls`: the system's CAs (or `ca_certs`), the broker's host name
    checked, and a client certificate when `certfile` is given; None without TLS."""
    if not tls:
        return None
    files = tls if isinstance(tls, Mapping) else {}
    context = ssl.create_default_context(cafile=files.get("ca_certs"))
    if files.get("certfile"):
        context.load_cert_chain(files["certfile"], files.get("keyfile"))
    return context


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
