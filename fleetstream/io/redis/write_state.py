"""WriteLatestState: the jobs' mapped messages into the latest-state store (DATA-CONTRACTS §10).

    fleet.mapped | "WriteLatestState" >> WriteLatestState(config.state.redis, batches=True)

Takes the mapped messages, `(vin, MappedMessage)` (lists of them with `batches=True`, the
streaming job), once per source message, before ordering and permissions: the state is
the same for every application, and permissions are applied when it is read. A bundle's
updates are written (`StateWriter`: one Lua script call per message, pipelined, newest
timestamp wins) before the bundle ends, so a checkpoint completes only once Redis has
them; while Redis is down the writer retries, then fails the bundle for the runner to
retry. Late and replayed messages never overwrite newer values, so a replay of an archive
rebuilds the state.
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam

from fleetstream.io.redis.state_store import StateWriter
from fleetstream.schemas.mapped import MappedMessage
from fleetstream.schemas.state import StateUpdate, state_updates


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
    """Collects a bundle's updates and writes them when the batch is full and at its end,
    so that a bundle (and with it a checkpoint) completes only once Redis has them."""

    def __init__(self, url: str, batches: bool, max_wait_s: float, batch_size: int) -> None:
        self._url = url
        self._batches = batches
        self._max_wait_s = max_wait_s
        self._batch_size = batch_size
        self._writer: StateWriter | None = None
        self._pending: list[tuple[str, list[StateUpdate]]] = []

    def setup(self) -> None:
        self._writer = StateWriter(self._url, self._max_wait_s, self._batch_size)

    def start_bundle(self) -> None:
        self._pending = []

    def process(self, element) -> Iterable[None]:
        pairs: Iterable[tuple[str, MappedMessage]] = element if self._batches else (element,)
        for vin, message in pairs:
            updates = state_updates(message.data)
            if updates:
                self._pending.append((vin, updates))
        if len(self._pending) >= self._batch_size:
            self._flush()
        return ()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            assert self._writer is not None
            self._writer.write(self._pending)
            self._pending = []

    def teardown(self) -> None:
        if self._writer is not None:
            self._writer.close()
