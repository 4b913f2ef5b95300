"""The one place that maps a configured `sink.type` to its Sink class.

Adding a sink: write `fleetstream/io/sinks/<name>.py` with a `Sink` subclass,
add it to `_SINK_CLASSES` below, and document its keys in `docs/sinks.md`.
"""
from __future__ import annotations

from typing import Any, Mapping

from fleetstream.io.sinks.base import Sink
from fleetstream.io.sinks.kafka import KafkaSink
from fleetstream.io.sinks.kinesis import KinesisSink
from fleetstream.io.sinks.mqtt import MqttSink
from fleetstream.io.sinks.object.azure_blob import AzureBlobSink
from fleetstream.io.sinks.object.file import FileSink
from fleetstream.io.sinks.object.s3 import S3Sink
from fleetstream.io.sinks.pubsub import PubSubSink
from fleetstream.io.sinks.webhook import WebhookSink
from fleetstream.schemas.config import Application
from fleetstream.schemas.delivery import Batching
from fleetstream.schemas.errors import ConfigError, refuse_unknown

_SINK_CLASSES: tuple[type[Sink], ...] = (FileSink, S3Sink, AzureBlobSink, KinesisSink, MqttSink,
                                          WebhookSink, PubSubSink, KafkaSink)

SINKS: Mapping[str, type[Sink]] = {cls.TYPE: cls for cls in _SINK_CLASSES}

BATCHING_KEYS = ("max_records", "max_bytes", "max_delay", "max_buffer")


def application_sink(application: Application) -> Sink:
    """A fresh Sink for `application` (one per worker): what Deliver writes through."""
    return build_sink(application.id, application.sink_options)[0]


def build_sink(application_id: str, options: Mapping[str, Any]) -> tuple[Sink, Batching]:
    """The Sink and batching for one application's `sink:` section.

    Raises ConfigError naming the application and key for an unknown type, a
    missing or unknown key, or a bad batching knob.
    """
    where = f"applications[{application_id}].sink"
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: expected a mapping with a `type`, got {options!r}")
    kind = options.get("type")
    if kind not in SINKS:
        raise ConfigError(
            f"{where}.type: unknown sink type {kind!r}; known: {', '.join(sorted(SINKS))}")
    cls = SINKS[kind]
    given = set(options) - {"type", *BATCHING_KEYS}
    missing = sorted(cls.REQUIRED - given)
    if missing:
        raise ConfigError(f"{where}: sink type {kind!r} needs {', '.join(missing)}")
    refuse_unknown(where, set(options) - {"type"}, {*cls.REQUIRED, *cls.OPTIONAL, *BATCHING_KEYS},
                   context=f" for sink type {kind!r}")
    sink = cls(application_id, {k: v for k, v in options.items() if k in given})
    sink.batching = _batching(where, options, cls.DEFAULT_BATCHING)
    return sink, sink.batching


def _batching(where: str, options: Mapping[str, Any], default: Batching) -> Batching:
    values = {}
    for key, fallback in zip(BATCHING_KEYS, (default.max_records, default.max_bytes,
                                              default.max_delay_s, default.max_buffer_bytes)):
        value = options.get(key, fallback)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or (key != "max_delay" and (value < 1 or value != int(value))):
            raise ConfigError(
                f"{where}.{key}: expected a {'number of seconds >= 0' if key == 'max_delay' else 'whole number >= 1'}, "
                f"got {value!r}")
        values[key] = value
    return Batching(int(values["max_records"]), int(values["max_bytes"]),
                    float(values["max_delay"]), int(values["max_buffer"]))
