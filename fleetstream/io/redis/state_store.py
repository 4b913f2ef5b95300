"""The latest-state store in Redis (DATA-CONTRACTS §10, docs/state.md): connecting and writing.

    writer = StateWriter("redis://127.0.0.1:6379/0")
    writer.write([(vin, state_updates(message.data)), ...])

State is kept per VIN for every application alike; permissions are applied when it is
read. The (vin, updates) pairs go to one Lua script (`KEEP_NEWEST`, one call per
`vehicles_per_call` pairs) that, atomically in Redis, keeps each property's (instance's)
entry only when it is newer than the kept one and indexes a kept location in the geo
index; so late, repeated and replayed data never overwrite newer values and the order of
writes does not matter. Calls go in pipelines of `batch_size` pairs. When Redis cannot be
reached the writer retries the whole batch (the script is idempotent) for up to
`max_wait_s`, then raises (`WriteLatestState` then fails the bundle, which the runner
retries): no update is dropped. What Redis has
acknowledged survives as its persistence allows (the dev server: append-only file, fsync
every second).
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Iterable, Sequence

import redis
from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError

from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.state import (GEO_KEY, LOCATION_FIELD, TS_DIGITS, StateUpdate,
                                       state_key)

_log = logging.getLogger(__name__)

#: KEYS[1] the geo index, KEYS[2..] the vehicles' hashes; ARGV per vehicle in KEYS order:
#: its VIN, its number of updates, the geo ("lon,lat" or "") of its newest location update,
#: then per update its field and value (13-digit epoch ms + entry JSON). Per vehicle: reads
#: the fields' kept values at once (HMGET), keeps a value only when its timestamp is newer
#: than the kept one's (or than an earlier update of the same field), writes the kept ones
#: at once (HSET) and, when a location was kept, indexes it. Returns how many it kept.
KEEP_NEWEST = """
local kept, at = 0, 1
for k = 2, #KEYS do
  local vin, n, geo = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local first = at + 3
  local fields = {}
  for i = 1, n do fields[i] = ARGV[first + 2 * (i - 1)] end
  local current = redis.call('HMGET', KEYS[k], unpack(fields))
  local newer, order = {}, {}
  for i = 1, n do
    local field, value = fields[i], ARGV[first + 2 * (i - 1) + 1]
    local old = newer[field] or current[i]
    if (not old) or string.sub(old, 1, 13) < string.sub(value, 1, 13) then
      if not newer[field] then order[#order + 1] = field end
      newer[field] = value
      kept = kept + 1
    end
  end
  if #order > 0 then
    local sets = {}
    for _, field in ipairs(order) do
      sets[#sets + 1] = field
      sets[#sets + 1] = newer[field]
    end
    redis.call('HSET', KEYS[k], unpack(sets))
  end
  if geo ~= '' and newer['%s'] then
    local comma = string.find(geo, ',', 1, true)
    redis.call('GEOADD', KEYS[1], string.sub(geo, 1, comma - 1), string.sub(geo, comma + 1), vin)
  end
  at = first + 2 * n
end
return kept
""" % LOCATION_FIELD
#: the errors after which the whole batch is sent again (the script is idempotent)
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
              redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError)


def _newest_geo(updates: Sequence[StateUpdate]) -> str:
    """The geo of the newest location update (of equal ones the first, as the script keeps)."""
    geo, newest = "", b""
    for update in updates:
        if update.field == LOCATION_FIELD and update.value[:TS_DIGITS] > newest:
            geo, newest = update.geo, update.value[:TS_DIGITS]
    return geo


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
    """Keeps the newest entries of vehicles in Redis, in pipelined batches of `batch_size`
    vehicles, `vehicles_per_call` vehicles per script call: each batch's EVALSHA commands
    are packed (hiredis) and written at once on the writer's own connection and their
    replies read in order (no pipeline object: this is the streaming job's per-message
    cost)."""

    def __init__(self, url: str, max_wait_s: float = 600.0, batch_size: int = 500,
                 vehicles_per_call: int = 50) -> None:
        self._client = connect(url)
        #: the writer's own connection, not borrowed from the pool for each batch: a borrow
        #: probes the socket (a system call), and in the job's busy worker each system call
        #: can wait for the GIL (docs/benchmarks.md, "Latest state", 2026-12-07 A/B)
        self._connection = self._client.connection_pool.make_connection()
        #: vehicles per script call: Redis's cost per call (script lookup, arguments) is
        #: shared by them
        self.vehicles_per_call = vehicles_per_call
        self._sha = hashlib.sha1(KEEP_NEWEST.encode()).hexdigest()
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
        commands = [self._call(batch[start:start + self.vehicles_per_call])
                    for start in range(0, len(batch), self.vehicles_per_call)]
        deadline = time.monotonic() + self._max_wait_s
        pause = 0.05
        while True:
            try:
                return self._send(commands)
            except _TRANSIENT as error:
                if time.monotonic() + pause > deadline:
                    raise
                self.retries += 1
                _log.warning("latest state: Redis write failed (%s); retrying in %.2f s",
                             error, pause)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _call(self, vehicles: list[tuple[str, Sequence[StateUpdate]]]) -> tuple:
        """One EVALSHA of the script for these vehicles."""
        args: list[Any] = []
        for vin, vehicle_updates in vehicles:
            args += (vin, len(vehicle_updates), _newest_geo(vehicle_updates))
            for update in vehicle_updates:
                args += (update.field, update.value)
        return ("EVALSHA", self._sha, len(vehicles) + 1, GEO_KEY,
                *(state_key(vin) for vin, _ in vehicles), *args)

    def _send(self, commands: list[tuple]) -> int:
        """Send the calls, load the script once when Redis does not have it; the kept count."""
        replies = self._exchange(commands)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            self._client.script_load(KEEP_NEWEST)
            replies = self._exchange(commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return sum(replies)

    def _exchange(self, commands: list[tuple]) -> list[Any]:
        """The replies (an error reply as its exception) of commands sent at once."""
        connection = self._connection
        try:
            connection.send_packed_command([b"".join([pack_command(c) for c in commands])])
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except ResponseError as error:      # this call's; the rest are readable
                    replies.append(error)
            return replies
        except BaseException:
            connection.disconnect()         # the next batch connects again
            raise

    def close(self) -> None:
        self._connection.disconnect()
        self._client.close()
