"""Which vehicles each application may see now: the `activations` topic, followed live.

`ActivationFollower` reads the compacted topic from its start in a background thread and
keeps, per (VIN, application), the winning event (newest `at`, the stricter status on a
tie: `schemas.activations.supersedes`), as the streaming job does. A vehicle is visible to
an application while its winner is `approved`; a revocation (any other winner, or a
tombstone) hides it as soon as the record is read. The API does not answer before the
follower has read up to the topic's end as it was at start-up, so it never serves an
approval that a later record already revoked.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Iterable, Mapping, Sequence

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from fleetstream.io.kafka.producer import READ_MARK_KEY
from fleetstream.io.kafka.topic_reader import (TopicReadError, group_consumer_config,
                                               topic_partitions, watermarks)
from fleetstream.schemas.activations import (APPROVED, ActivationEvent, parse_activation,
                                             supersedes)
from fleetstream.schemas.config import Application

_log = logging.getLogger(__name__)


class Approvals:
    """Per application: the ids of its approved vehicles (its vehicle id -> VIN)."""

    def __init__(self, applications: Sequence[Application]) -> None:
        self._applications = {app.id: app for app in applications}
        self._winner: dict[tuple[str, str], ActivationEvent] = {}
        #: application id -> its vehicle id (VIN or pseudonym) -> VIN
        self._visible: dict[str, dict[str, str]] = {app.id: {} for app in applications}
        self._lock = threading.Lock()

    def offer(self, event: ActivationEvent) -> None:
        """Take an event in by the winner rule."""
        pair = (event.vin, event.application_id)
        with self._lock:
            if not supersedes(event, self._winner.get(pair)):
                return
            self._winner[pair] = event
            self._show(pair, event.status == APPROVED)

    def forget(self, vin: str, application_id: str) -> None:
        """A tombstone: the pair has no event (the vehicle is not visible)."""
        pair = (vin, application_id)
        with self._lock:
            self._winner.pop(pair, None)
            self._show(pair, False)

    def _show(self, pair: tuple[str, str], visible: bool) -> None:
        vin, app_id = pair
        app = self._applications.get(app_id)
        if app is None:
            return
        vehicle_id = app.vehicle_id(vin)
        if visible:
            self._visible[app_id][vehicle_id] = vin
        else:
            self._visible[app_id].pop(vehicle_id, None)

    def vin_of(self, application_id: str, vehicle_id: str) -> str | None:
        """The VIN behind the application's vehicle id while it is approved, else None."""
        return self._visible.get(application_id, {}).get(vehicle_id)

    def vehicle_ids(self, application_id: str) -> list[str]:
        """The application's approved vehicles, by its ids, sorted."""
        return sorted(list(self._visible.get(application_id, {})))

    def id_of_vin(self, application_id: str) -> Mapping[str, str]:
        """VIN -> the application's id, for its approved vehicles (a copy)."""
        return {vin: vehicle_id for vehicle_id, vin in
                list(self._visible.get(application_id, {}).items())}


class ActivationFollower:
    """Follows the activations topic into `approvals` in a daemon thread."""

    def __init__(self, bootstrap: str, topic: str, approvals: Approvals,
                 poll_s: float = 0.05) -> None:
        self.bootstrap, self.topic, self.approvals = bootstrap, topic, approvals
        self._poll_s = poll_s
        self._consumer = Consumer({
            **group_consumer_config(bootstrap, f"fleetstream-api-{uuid.uuid4().hex}"),
            "fetch.wait.max.ms": 50, "enable.partition.eof": False})
        #: for watermarks, apart from the consuming thread's client
        self._meta = Consumer(group_consumer_config(bootstrap, "fleetstream-api-meta"))
        self._positions: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Assign every partition from its start, follow it, and return once everything the
        topic held at this call is read. TopicReadError when the broker or topic is not there."""
        partitions = topic_partitions(self._meta, self.bootstrap, self.topic, timeout_s)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                               for p in partitions])
        self._partitions = partitions
        self._thread = threading.Thread(target=self._follow, name="activations", daemon=True)
        self._thread.start()
        self.sync(timeout_s)

    def ends(self, timeout_s: float = 10.0) -> dict[int, int]:
        """Each partition's end offset now."""
        return {p: watermarks(self._meta, TopicPartition(self.topic, p), timeout_s)[1]
                for p in self._partitions}

    def sync(self, timeout_s: float = 30.0) -> None:
        """Return once every record written before this call is taken in."""
        ends = self.ends(timeout_s)
        deadline = time.monotonic() + timeout_s
        while any(self._positions.get(p, 0) < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise TopicReadError(f"activations topic {self.topic!r} on {self.bootstrap}: "
                                     f"not read to its end within {timeout_s:.0f} s")
            time.sleep(0.01)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                records = self._consumer.consume(500, self._poll_s)
            except Exception as error:             # noqa: BLE001 - keep following
                self.error = str(error)
                _log.warning("activations: %s", error)
                time.sleep(1.0)
                continue
            for record in records:
                if record.error() is not None:
                    if record.error().code() != KafkaError._PARTITION_EOF:
                        _log.warning("activations: %s", record.error())
                    continue
                self._take(record.key(), record.value())
                self._positions[record.partition()] = record.offset() + 1

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or key == READ_MARK_KEY:
            return
        if value is None:
            vin, _, app_id = key.decode(errors="replace").partition("/")
            self.approvals.forget(vin, app_id)
            return
        try:
            self.approvals.offer(parse_activation(orjson.loads(value)))
        except (orjson.JSONDecodeError, ValueError):
            pass                                    # the streaming job dead-letters it

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._consumer.close()
        self._meta.close()


def seed(approvals: Approvals, events: Iterable[ActivationEvent]) -> None:
    """Offer the configuration's own events (the topic's win over them by the same rule)."""
    for event in events:
        approvals.offer(event)
