"""WriteLatestState: the jobs' mapped messages into the latest-state store (DATA-CONTRACTS §10).

    fleet.mapped | "WriteLatestState" >> WriteLatestState(config.state.redis, batches=True)

Takes the mapped messages, `(vin, MappedMessage)` (lists of them with `batches=True`, the
streaming job), once per source message, before ordering and permissions: the state is
the same for every application, and permissions are applied when it is read. A bundle's
entries are coalesced per vehicle (`NewestUpdates`: per field the newest, encoded once)
and written (`StateWriter`: one Lua script call per vehicle, pipelines of `batch_size` calls, newest timestamp wins) when
`max_pending` vehicles are pending and before the bundle ends, so a checkpoint completes only once Redis has them;
while Redis is down the writer retries, then fails the bundle for the runner to retry.
Late and replayed messages never overwrite newer values, so a replay of an archive
rebuilds the state.
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam

from fleetstream.io.redis.state_batch import NewestUpdates
from fleetstream.io.redis.state_store import StateWriter
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.schemas.state import newest_entries


class WriteLatestState(beam.PTransform):
    """Keep each vehicle's newest entries in Redis, from `(vin, MappedMessage)` (or lists)."""

    def __init__(self, redis_url: str, batches: bool = False, max_wait_s: float = 600.0,
                 batch_size: int = 500) -> None:
        super().__init__()
        self._redis_url = redis_url
        self._batches = batches
        self._max_wait_s = max_wait_s
        self._batch_size = batch_size

    def expand(self, messages: beam.PCollection) -> beam.PCollection:
        return messages | "KeepNewest" >> beam.ParDo(_WriteStateFn(
            self._redis_url, self._batches, self._max_wait_s, self._batch_size))


class _WriteStateFn(beam.DoFn):
    """Collects a bundle's updates per vehicle and writes them when `max_pending` vehicles
    are pending and at its end, so that a bundle (and with it a checkpoint) completes only
    once Redis has them."""

    def __init__(self, url: str, batches: bool, max_wait_s: float, batch_size: int,
                 max_pending: int = 5_000) -> None:
        self._url = url
        self._batches = batches
        self._max_wait_s = max_wait_s
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._writer: StateWriter | None = None
        self._pending = NewestUpdates()

    def setup(self) -> None:
        self._writer = StateWriter(self._url, self._max_wait_s, self._batch_size)

    def start_bundle(self) -> None:
        self._pending = NewestUpdates()

    def process(self, element) -> Iterable[None]:
        pairs: Iterable[tuple[str, MappedMessage]] = element if self._batches else (element,)
        for vin, message in pairs:
            entries = newest_entries(message.data)
            if entries:
                self._pending.add(vin, entries)
        if len(self._pending) >= self._max_pending:
            self._flush()
        return ()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if len(self._pending):
            assert self._writer is not None
            self._writer.write(self._pending.take())

    def teardown(self) -> None:
        if self._writer is not None:
            self._writer.close()
