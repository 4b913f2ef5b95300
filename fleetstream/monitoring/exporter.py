"""`fleetstream exporter`: what Prometheus cannot get from Flink, served at /metrics.

* `fleetstream_consumer_lag_records{topic}` and `fleetstream_consumer_lag_seconds{topic}`:
  the streaming job's consumer group behind each raw topic, from Kafka (io/kafka/lag.py);
* `fleetstream_approved_vehicles{application}`: vehicles approved now, from the
  activations topic (the "source silent while it has approved vehicles" alert);
* `fleetstream_application_info{application, app_key, sink}`: Flink's reporter turns
  every character of a counter name outside `[a-zA-Z0-9_]` into `_`, so the job's
  `app/fleet-a.documents` arrives as `..._app_fleet_a_documents`; the recording rules
  join on `app_key` to give the series back their application's real id and sink type;
* `fleetstream_exporter_kafka_up`: 0 while Kafka cannot be read (the other series then
  keep their last values out: a scrape never fails because Kafka is down).

Kafka is read by a thread of the exporter's own every `refresh_s` (the activations
incrementally), and a scrape answers at once with the newest figures: reading lag takes a
round trip per partition, longer than a short scrape timeout allows (with 2 s scrapes,
most timed out and the application join had gaps).
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Iterator, NamedTuple

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fleetstream.io.kafka.activations import ActivationLog
from fleetstream.io.kafka.lag import TopicLag, consumer_lag
from fleetstream.schemas.errors import ConfigError
from fleetstream.settings.stream import StreamSettings

_LOG = logging.getLogger(__name__)
_FLINK_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def app_key(application_id: str) -> str:
    """An application id as it appears inside Flink's metric names."""
    return _FLINK_INVALID.sub("_", application_id)


def check_app_keys(application_ids: list[str]) -> None:
    """ConfigError when two application ids look the same to Flink's reporter."""
    seen: dict[str, str] = {}
    for application_id in application_ids:
        other = seen.setdefault(app_key(application_id), application_id)
        if other != application_id:
            raise ConfigError(f"applications: {other!r} and {application_id!r} differ only in "
                              f"'.', '-' or '_', which Flink's metric names cannot tell apart; "
                              f"rename one for per-application metrics")


class _Reading(NamedTuple):
    """What one read of Kafka found; `lags` None when Kafka could not be read."""

    lags: dict[str, TopicLag] | None
    approved: dict[str, int]


class FleetCollector(Collector):
    """The exporter's series; Kafka is read once at construction, then every `refresh_s`
    by a daemon thread (until `close`)."""

    def __init__(self, settings: StreamSettings, refresh_s: float = 5.0) -> None:
        self._settings = settings
        self._applications = {a.id: str(a.sink_options.get("type")) for a in
                              settings.config.applications}
        check_app_keys(list(self._applications))
        self._activations = ActivationLog()
        self._reading = self._read()
        self._closed = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, args=(refresh_s,),
                                           name="exporter-refresh", daemon=True)
        self._refresher.start()

    def close(self) -> None:
        self._closed.set()

    def _refresh(self, every_s: float) -> None:
        while not self._closed.wait(every_s):
            self._reading = self._read()

    def _read(self) -> _Reading:
        kafka = self._settings.kafka
        try:
            lags = consumer_lag(kafka.bootstrap_servers, kafka.consumer_group,
                                self._settings.raw_topics.values())
            self._activations.read(kafka.bootstrap_servers, self._settings.activations_topic)
        except Exception as error:  # noqa: BLE001 - reported as kafka_up 0, never raised
            _LOG.warning("cannot read Kafka at %s: %s", kafka.bootstrap_servers, error)
            return _Reading(None, {})
        return _Reading(lags, self._approved())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("fleetstream_application_info",
                                 "configured applications (app_key: the id in Flink's names)",
                                 labels=["application", "app_key", "sink"])
        for application_id, sink in sorted(self._applications.items()):
            info.add_metric([application_id, app_key(application_id), sink], 1)
        yield info
        lags, approved = self._reading
        up = GaugeMetricFamily("fleetstream_exporter_kafka_up",
                               "1 when the exporter's last read of Kafka succeeded")
        up.add_metric([], 0 if lags is None else 1)
        yield up
        if lags is None:
            return
        records = GaugeMetricFamily("fleetstream_consumer_lag_records",
                                    "records behind the newest offset", labels=["topic"])
        seconds = GaugeMetricFamily("fleetstream_consumer_lag_seconds",
                                    "age of the oldest record not yet committed",
                                    labels=["topic"])
        for topic, lag in sorted(lags.items()):
            records.add_metric([topic], lag.records)
            seconds.add_metric([topic], lag.seconds)
        yield records
        yield seconds
        vehicles = GaugeMetricFamily("fleetstream_approved_vehicles",
                                     "vehicles approved for the application now",
                                     labels=["application"])
        for application_id in sorted(self._applications):
            vehicles.add_metric([application_id], approved.get(application_id, 0))
        yield vehicles

    def _approved(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self._activations.winner.values():
            if event.status == "approved":
                counts[event.application_id] = counts.get(event.application_id, 0) + 1
        return counts
