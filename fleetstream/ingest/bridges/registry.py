"""The one place that maps a bridge's section name to its class.

Adding a bridge: write `fleetstream/ingest/bridges/<kind>.py` with a `Bridge` subclass and
add a line below. Classes are imported when a configuration uses them, so a gateway with
no Pub/Sub section never loads Google's client.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from fleetstream.ingest.bridges.base import Bridge

#: section name -> "module:Class"
BRIDGES: Mapping[str, str] = {
    "mqtt": "fleetstream.ingest.bridges.mqtt:MqttBridge",
    "amqp": "fleetstream.ingest.bridges.amqp:AmqpBridge",
    "sqs": "fleetstream.ingest.bridges.sqs:SqsBridge",
    "kinesis": "fleetstream.ingest.bridges.kinesis:KinesisBridge",
    "kafka": "fleetstream.ingest.bridges.kafka:KafkaBridge",
    "pubsub": "fleetstream.ingest.bridges.pubsub:PubSubBridge",
}


def build_bridge(kind: str, source: str, topic: str, options: Mapping[str, Any],
                 where: str) -> Bridge:
    """The configured bridge; ConfigError (from the class) when its options are wrong."""
    module, _, name = BRIDGES[kind].partition(":")
    cls: type[Bridge] = getattr(importlib.import_module(module), name)
    return cls(source, topic, options, where)
