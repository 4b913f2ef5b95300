"""`fleetstream ingest --workers N`: N processes share the HTTP port (SO_REUSEPORT).

The first process runs everything (listener, bridges, poller); `start_http_workers`
starts the other N-1, which run only the HTTP listener, each with its own Kafka producer,
and the kernel spreads new connections over the N listeners. A worker stops on SIGTERM
or SIGINT, and on its own when the first process is gone (even after a SIGKILL), so no
orphan keeps the port. Metrics are per process: `/metrics` answers with the counts of
whichever process took the connection (docs/ingest.md).
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from multiprocessing.process import BaseProcess

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.settings.ingest import IngestSettings

#: how often a worker checks that the first process still runs
PARENT_CHECK_S = 1.0


def start_http_workers(settings: IngestSettings, count: int) -> list[BaseProcess]:
    """Start `count` HTTP-only worker processes (spawned, not forked: the first process
    already runs the producer's threads)."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_http_worker, args=(settings, os.getpid()),
                               name=f"fleetstream-ingest-http-{n + 1}", daemon=True)
               for n in range(count)]
    for worker in workers:
        worker.start()
    return workers


def _http_worker(settings: IngestSettings, parent: int) -> None:
    from fleetstream.ingest.http import serve_http

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        writer = RawWriter(settings.bootstrap_servers,
                           max_value_bytes=settings.http.max_body_bytes)
        watcher = asyncio.create_task(_stop_when_orphaned(parent, stop))
        try:
            await serve_http(settings, writer, IngestMetrics(), stop, reuse_port=True)
        finally:
            watcher.cancel()
            writer.close()

    import uvloop   # an HTTP-only process: see service.event_loop_factory
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
        await asyncio.sleep(PARENT_CHECK_S)
