"""AppendGeofenceEvents: every geofence event also goes to a Redis stream, for the REST API.

Input: `(application_id, Record)` geofence events (lists of them with `batches=True`),
as `GeofenceEvents` gives them. Each event is appended (XADD) to the stream
`fs:geofence:{application_id}:{geofence_id}` with one field, `event`, holding the
event's JSON exactly as the application's sink receives it (DATA-CONTRACTS §11).

Stream ids are monotonic, as Redis requires, and follow event time: an event is added
with the id `<its timestamp ms>-*` (Redis picks the sequence number). An event older
than the stream's newest entry (another vehicle's later crossing came first, or a
replay of old data into a stream that holds newer) cannot take its own time: it is
added with the newest entry's milliseconds, `<newest ms>-*`. So ids never go back, an
id's milliseconds are never before its event's `timestamp` (the exact time is in the
event), and one writer's events keep their order in each stream. Each worker remembers
the newest id it wrote per stream, so this costs nothing in the common case; only when
another worker went ahead does an add fail, read the stream's newest id and try again.
Each stream is trimmed to about `maxlen` entries (`MAXLEN ~`).

Delivery is at least once, like the sinks': a retried bundle or a replay appends an
event again, with the same `message_id`; readers drop repeats by it. A write that
still fails after `attempts` tries is logged and counted
(`app/<id>.geofence_stream_failures`), and the job goes on: the events still reach
the application's sink.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

import apache_beam as beam
import orjson

from fleetstream.schemas.state import geofence_events_key
from fleetstream.schemas.delivery import Record
from fleetstream.transforms.counter_names import APP_SCOPE
from fleetstream.transforms.counters import BundleCounts

_LOG = logging.getLogger(__name__)
#: entries kept per stream (approximately: Redis trims whole nodes)
DEFAULT_MAXLEN = 100_000
_NOT_GREATER = "equal or smaller"


def stream_key(application_id: str, geofence_id: str) -> str:
    """The Redis stream of one application's fence (the layout is schemas.state's)."""
    return geofence_events_key(application_id, geofence_id)


def append_events(client, events: Sequence[tuple[str, Record]], maxlen: int = DEFAULT_MAXLEN,
                  newest: dict[str, int] | None = None) -> None:
    """XADD each event to its stream, in order, pipelined; see the module docstring for ids.

    `newest` (stream key -> the newest id's milliseconds this writer knows) is kept up to
    date, so an event older than its stream's newest takes that time at once and a batch
    keeps its order; only when another writer went ahead does an add fail and try again.
    """
    if not events:
        return
    newest = {} if newest is None else newest
    keyed = []
    pipe = client.pipeline(transaction=False)
    for application_id, record in events:
        key = stream_key(application_id, orjson.loads(record.document)["geofence_id"])
        at_ms = max(record.event_ms, newest.get(key, 0))
        newest[key] = at_ms
        keyed.append((key, record))
        pipe.xadd(key, {"event": record.document}, id=f"{at_ms}-*", maxlen=maxlen,
                  approximate=True)
    for (key, record), result in zip(keyed, pipe.execute(raise_on_error=False)):
        if isinstance(result, Exception):
            if _NOT_GREATER not in str(result):
                raise result
            _append_after_newest(client, key, record, maxlen, newest)


def _append_after_newest(client, key: str, record: Record, maxlen: int,
                         newest: dict[str, int]) -> None:
    """Add an event older than the stream's newest with the newest's milliseconds."""
    import redis

    for _ in range(10):     # another writer may add between the read and the add
        top = client.xinfo_stream(key)["last-generated-id"]
        newest_ms = int((top.decode() if isinstance(top, bytes) else top).split("-")[0])
        newest[key] = max(newest.get(key, 0), newest_ms)
        try:
            client.xadd(key, {"event": record.document}, id=f"{newest_ms}-*", maxlen=maxlen,
                        approximate=True)
            return
        except redis.ResponseError as error:
            if _NOT_GREATER not in str(error):
                raise
    raise RuntimeError(f"{key}: could not find a stream id after the newest entry")


class AppendGeofenceEvents(beam.PTransform):
    """Geofence events -> their Redis streams (nothing comes out)."""

    def __init__(self, redis_url: str, batches: bool = False, maxlen: int = DEFAULT_MAXLEN,
                 attempts: int = 5) -> None:
        super().__init__()
        self._url = redis_url
        self._batches = batches
        self._maxlen = maxlen
        self._attempts = attempts

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        if not self._batches:
            events = events | "AsLists" >> beam.Map(lambda pair: [pair])
        return events | "XAdd" >> beam.ParDo(_AppendFn(self._url, self._maxlen, self._attempts))


class _AppendFn(beam.DoFn):
    def __init__(self, url: str, maxlen: int, attempts: int) -> None:
        self._url = url
        self._maxlen = maxlen
        self._attempts = attempts
        self._counts = BundleCounts()

    def setup(self) -> None:
        import redis

        self._client = redis.Redis.from_url(self._url, socket_timeout=10,
                                            socket_connect_timeout=10)
        self._newest: dict[str, int] = {}

    def process(self, events: list[tuple[str, Record]]) -> Iterable[None]:
        for attempt in range(1, self._attempts + 1):
            try:
                append_events(self._client, events, self._maxlen, self._newest)
                return
            except Exception as error:  # noqa: BLE001 - Redis down, timeouts: retried
                if attempt == self._attempts:
                    _LOG.error("geofence streams: %d event(s) not appended after %d attempts: %s",
                               len(events), attempt, error)
                    for application_id, _ in events:
                        self._counts.add(f"{APP_SCOPE}{application_id}.geofence_stream_failures")
                    return
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
        yield from ()

    def finish_bundle(self) -> None:
        self._counts.flush()

    def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
