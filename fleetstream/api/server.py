"""Running `fleetstream api`: check everything at start-up, follow activations, serve.

    run_api(config, listen="127.0.0.1:8091", bootstrap="127.0.0.1:9092", topic="activations",
            workers=1)

Start-up fails with a ConfigError naming the field when `state:` is missing, Redis does not
answer, an application's `api_keys_env` variable is not set, or Kafka or the activations
topic cannot be read. The server answers only once the activations topic is read to its end.
With `workers` above 1, the first process starts the others (spawned) once its own start-up
checks passed; each holds its own keys, activations follower and Redis client (they share
nothing but Redis and Kafka) and listens on the same port (SO_REUSEPORT), and the kernel
spreads new connections over them. A worker stops on SIGTERM or SIGINT, and on its own
when the first process is gone, so no orphan keeps the port.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import threading
import time
from typing import Any, AsyncIterator, Mapping

import redis.asyncio as aioredis

from fleetstream.api.activations import ActivationFollower, Approvals, seed
from fleetstream.api.app import StateApi, create_app
from fleetstream.api.keys import ApiKeys
from fleetstream.io.kafka.topic_reader import TopicReadError
from fleetstream.io.redis.state_store import check_state_store
from fleetstream.runtime.processes import stop_processes
from fleetstream.schemas.config import Config
from fleetstream.schemas.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8091"


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class ApiService:
    """What one API process holds: keys, approvals (followed live), the Redis client."""

    def __init__(self, config: Config, bootstrap: str, topic: str,
                 environ: Mapping[str, str] | None = None) -> None:
        if config.state is None:
            raise ConfigError('state: fleetstream api reads the latest state; add '
                              'state: {redis: "redis://127.0.0.1:6379/0"}')
        self.keys = ApiKeys.from_environment(config.applications,
                                             os.environ if environ is None else environ)
        check_state_store(config.state.redis)
        self.approvals = Approvals(config.applications)
        seed(self.approvals, config.activations)
        self.follower = ActivationFollower(bootstrap, topic, self.approvals)
        try:
            self.follower.start()
        except TopicReadError as error:
            self.follower.close()
            raise ConfigError(f"--kafka/--activations-topic: {error}") from None
        self.config = config

    def asgi(self) -> Any:
        """The ASGI application (its Redis client opens and closes with the server)."""
        assert self.config.state is not None
        url = self.config.state.redis
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                         max_connections=256)
        api = StateApi(self.config.applications, self.approvals, self.keys, client)

        @contextlib.asynccontextmanager
        async def lifespan(_app: Any) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await client.aclose()

        return create_app(api, lifespan)

    def close(self) -> None:
        self.follower.close()


#: how often a worker checks that the first process still runs
PARENT_CHECK_S = 1.0


def run_api(config: Config, listen: str = DEFAULT_LISTEN, bootstrap: str = "127.0.0.1:9092",
            topic: str = "activations", workers: int = 1) -> None:
    """Serve until interrupted, in `workers` processes."""
    host, port = parse_listen(listen)
    service = ApiService(config, bootstrap, topic)
    context = multiprocessing.get_context("spawn")   # the follower's threads already run
    others = [context.Process(target=_worker, args=(config, host, port, bootstrap, topic,
                                                    os.getpid()),
                              name=f"fleetstream-api-{n + 1}", daemon=True)
              for n in range(workers - 1)]
    try:
        for worker in others:
            worker.start()
        _serve(service, host, port, reuse_port=workers > 1)
    finally:
        stop_processes(others)
        service.close()


def _serve(service: ApiService, host: str, port: int, reuse_port: bool,
           parent: int | None = None) -> None:
    import uvicorn
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(
        service.asgi(), access_log=False, log_level="warning", loop="auto", http="auto",
        lifespan="on", server_header=False, proxy_headers=False,
        h11_max_incomplete_event_size=16 * 1024))
    if parent is not None:
        threading.Thread(target=_exit_when_orphaned, args=(server, parent), daemon=True).start()
    server.run(sockets=[listener])


def _worker(config: Config, host: str, port: int, bootstrap: str, topic: str,
            parent: int) -> None:
    service = ApiService(config, bootstrap, topic)
    try:
        _serve(service, host, port, reuse_port=True, parent=parent)
    finally:
        service.close()


def _exit_when_orphaned(server: Any, parent: int) -> None:
    while not server.should_exit:
        if os.getppid() != parent:
            server.should_exit = True
        time.sleep(PARENT_CHECK_S)


