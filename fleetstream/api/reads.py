"""Batched Redis reads: the requests waiting at one moment share one pipelined round trip.

Each request's read joins the current batch; the batch is sent once the event loop has run
every request that is ready (`call_soon`), as one pipeline (no transaction) on one pooled
connection. Under load that is one round trip, one connection check-out and one pair of
syscalls for many requests instead of one each; alone, a request waits for nobody.
"""
from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

#: at most this many reads go in one pipeline
MAX_BATCH = 256


class BatchedReads:
    """`hgetall` and `hget` through shared pipelines of one client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._pending: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future]] = []
        self._scheduled = False

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return await self._queue("hgetall", key)

    async def hget(self, key: str, field: str) -> bytes | None:
        return await self._queue("hget", key, field)

    def _queue(self, command: str, *args: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append(((command, *args), {}, future))
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

    async def _execute(self, batch: list) -> None:
        pipeline = self.client.pipeline(transaction=False)
        for (command, *args), kwargs, _ in batch:
            getattr(pipeline, command)(*args, **kwargs)
        try:
            results = await pipeline.execute(raise_on_error=False)
        except Exception as error:              # noqa: BLE001 - each request gets it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
