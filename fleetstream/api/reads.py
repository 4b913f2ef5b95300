"""Batched Redis reads: the requests waiting at one moment share one pipelined round trip.

Each request's read joins the current batch; the batch is sent once the event loop has run
every request that is ready (`call_soon`): its commands packed together and written at once
on one pooled connection, then their replies read in order. Under load that is one round
trip, one connection check-out and one pair of syscalls for many requests instead of one
each; alone, a request waits for nobody. The commands go straight to the connection
(packed by hiredis, replies read by redis-py's `read_response`, hiredis parsing): no
pipeline object and no response callbacks, so `hgetall` answers Redis's flat
`[field, value, ...]` list.
"""
from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

#: at most this many reads go in one batch
MAX_BATCH = 256


class BatchedReads:
    """`hgetall` and `hget` through shared round trips of one client's connection pool."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.pool = client.connection_pool
        self._pending: list[tuple[tuple[str, ...], asyncio.Future]] = []
        self._scheduled = False

    def hgetall(self, key: str) -> asyncio.Future:
        """The hash as Redis sends it: `[field, value, field, value, ...]` (bytes)."""
        return self._queue(("HGETALL", key))

    def hget(self, key: str, field: str) -> asyncio.Future:
        return self._queue(("HGET", key, field))

    def _queue(self, command: tuple[str, ...]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        elif len(self._pending) >= MAX_BATCH:
            self._send()
        return future

    def _send(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            asyncio.ensure_future(self._execute(batch))

    async def _execute(self, batch: list[tuple[tuple[str, ...], asyncio.Future]]) -> None:
        try:
            connection = await self.pool.get_connection()
        except Exception as error:              # noqa: BLE001 - each request gets it
            _fail(batch, error)
            return
        try:
            await connection.send_packed_command(
                b"".join([pack_command(command) for command, _ in batch]), check_health=False)
            for _, future in batch:
                try:
                    result = await connection.read_response()
                except ResponseError as error:  # this command's error; the rest are readable
                    result = error
                if future.done():
                    continue
                if isinstance(result, ResponseError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        except BaseException as error:          # each waiting request gets it
            await connection.disconnect()
            _fail(batch, error if isinstance(error, Exception)
                  else RedisConnectionError("the read was cancelled"))
            if not isinstance(error, Exception):
                raise
        finally:
            await self.pool.release(connection)


def _fail(batch: list[tuple[tuple[str, ...], asyncio.Future]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
