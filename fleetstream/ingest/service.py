"""`fleetstream ingest`: the HTTP listener, the bridges and the poller of one configuration.

    settings = load_ingest_settings("ingest.yaml")
    run_ingest(settings)            # until SIGINT or SIGTERM

Every bridge is built and every `poll:` section checked before anything starts: a
wrong section fails the start with a ConfigError naming it. The raw topics (and the
dead-letter topic) are created when missing. On SIGTERM the listener stops taking
requests, bridges stop taking messages, and what was accepted is written before exit.
"""
from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable

from fleetstream.ingest.bridges.registry import build_bridge
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.poller import poll_settings, run_poller
from fleetstream.ingest.writer import RawWriter
from fleetstream.settings.ingest import IngestSettings


async def serve(settings: IngestSettings, stop: asyncio.Event, reuse_port: bool = False) -> None:
    """Run every way in of `settings` until `stop` is set (`reuse_port`: the HTTP port is
    shared with other processes, see `workers`)."""
    bridges = [build_bridge(kind, source.name, source.topic, options,
                            f"sources.{source.name}.{kind}")
               for source in settings.sources.values()
               for kind, options in source.bridges.items()]
    polls = poll_settings(settings)
    writer = RawWriter(settings.bootstrap_servers, max_value_bytes=settings.http.max_body_bytes)
    writer.ensure_topics([source.topic for source in settings.sources.values()])
    metrics = IngestMetrics()
    running: list[Awaitable[None]] = [bridge.run(writer, metrics, stop) for bridge in bridges]
    if any(source.push for source in settings.sources.values()):
        from fleetstream.ingest.http import serve_http
        running.append(serve_http(settings, writer, metrics, stop, reuse_port=reuse_port))
    if settings.grpc is not None:
        from fleetstream.ingest.grpc_push import serve_grpc
        running.append(serve_grpc(settings, writer, metrics, stop))
    if polls:
        running.append(run_poller(settings, polls, writer, metrics, stop))
    try:
        await asyncio.gather(*running)
    finally:
        writer.close()


def run_ingest(settings: IngestSettings, workers: int = 1) -> None:
    """Serve until SIGINT or SIGTERM; with `workers` > 1, that many processes share the HTTP
    port and only this one runs the bridges and the poller."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop, reuse_port=workers > 1)

    helpers = []
    if workers > 1 and any(source.push for source in settings.sources.values()):
        from fleetstream.ingest.workers import start_http_workers
        helpers = start_http_workers(settings, workers - 1)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
            runner.run(main())
    finally:
        if helpers:
            from fleetstream.runtime.processes import stop_processes
            stop_processes(helpers)


def event_loop_factory(settings: IngestSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop, whose C transports took about 30 % off the HTTP listener's CPU per push
    (docs/benchmarks.md), unless a gRPC listener runs: grpc.aio is only used here on
    asyncio's own loop (None)."""
    if settings.grpc is not None:
        return None
    import uvloop
    return uvloop.new_event_loop
