"""The latest-state store in Redis (DATA-CONTRACTS §10, docs/state.md): connecting and writing.

    writer = StateWriter("redis://127.0.0.1:6379/0")
    writer.write([(vin, state_updates(message.data)), ...])

State is kept per VIN for every application alike; permissions are applied when it is
read. Each vehicle's updates become one call of one Lua script (`KEEP_NEWEST`) that,
atomically in Redis, keeps each property's (instance's) entry only when it is newer than
the kept one and indexes a kept location in the geo index; so late, repeated and replayed
data never overwrite newer values and the order of writes does not matter. Calls go in
pipelines of `batch_size`. When Redis cannot be reached the writer retries the whole batch
(the script is idempotent) for up to `max_wait_s`, then raises (`WriteLatestState` then
fails the bundle, which the runner retries): no update is dropped. What Redis has
acknowledged survives as its persistence allows (the dev server: append-only file, fsync
every second).
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

import redis

from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.state import GEO_KEY, StateUpdate, state_key

_log = logging.getLogger(__name__)

#: KEYS[1] the vehicle's hash, KEYS[2] the geo index; ARGV[1] the VIN, then per update its
#: field, value (13-digit epoch ms + entry JSON) and geo ("lon,lat" or ""). Keeps a value
#: only when its timestamp is newer than the kept one's; returns how many it kept.
KEEP_NEWEST = """
local kept = 0
for i = 2, #ARGV, 3 do
  local value = ARGV[i + 1]
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if (not current) or string.sub(current, 1, 13) < string.sub(value, 1, 13) then
    redis.call('HSET', KEYS[1], ARGV[i], value)
    kept = kept + 1
    local geo = ARGV[i + 2]
    if geo ~= '' then
      local comma = string.find(geo, ',', 1, true)
      redis.call('GEOADD', KEYS[2], string.sub(geo, 1, comma - 1), string.sub(geo, comma + 1), ARGV[1])
    end
  end
end
return kept
"""


def connect(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A client of the configured `state.redis` URL."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                health_check_interval=30)


def check_state_store(url: str) -> None:
    """Start-up check: ConfigError naming `state.redis` when Redis does not answer."""
    try:
        connect(url, timeout_s=3.0).ping()
    except redis.RedisError as error:
        raise ConfigError(f"state.redis: cannot reach Redis at {url}: {error}") from None


class StateWriter:
    """Keeps the newest entries of vehicles in Redis, in pipelined batches of script calls."""

    def __init__(self, url: str, max_wait_s: float = 600.0, batch_size: int = 500) -> None:
        self._client = connect(url)
        self._script = self._client.register_script(KEEP_NEWEST)
        self._max_wait_s = max_wait_s
        self.batch_size = batch_size
        #: calls that were retried because Redis failed (for tests and logs)
        self.retries = 0

    def write(self, updates: Iterable[tuple[str, Sequence[StateUpdate]]]) -> int:
        """Apply (vin, updates) pairs; returns how many values were kept (newer ones)."""
        kept = 0
        batch: list[tuple[str, Sequence[StateUpdate]]] = []
        for vin, vehicle_updates in updates:
            if vehicle_updates:
                batch.append((vin, vehicle_updates))
            if len(batch) >= self.batch_size:
                kept += self._write_batch(batch)
                batch = []
        if batch:
            kept += self._write_batch(batch)
        return kept

    def _write_batch(self, batch: list[tuple[str, Sequence[StateUpdate]]]) -> int:
        deadline = time.monotonic() + self._max_wait_s
        pause = 0.05
        while True:
            try:
                pipeline = self._client.pipeline(transaction=False)
                for vin, vehicle_updates in batch:
                    args: list[str | bytes] = [vin]
                    for update in vehicle_updates:
                        args += (update.field, update.value, update.geo)
                    self._script(keys=[state_key(vin), GEO_KEY], args=args, client=pipeline)
                return sum(pipeline.execute())
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                    redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError) as error:
                if time.monotonic() + pause > deadline:
                    raise
                self.retries += 1
                _log.warning("latest state: Redis write failed (%s); retrying in %.2f s",
                             error, pause)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def close(self) -> None:
        self._client.close()
