"""Running `fleetstream api`: check everything at start-up, follow activations, serve.

    run_api(config, listen="127.0.0.1:8091", bootstrap="127.0.0.1:9092", topic="activations")

Start-up fails with a ConfigError naming the field when `state:` is missing, Redis does not
answer, an application's `api_keys_env` variable is not set, or Kafka or the activations
topic cannot be read. The server answers only once the activations topic is read to its end.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, AsyncIterator, Mapping

import redis.asyncio as aioredis

from fleetstream.api.activations import ActivationFollower, Approvals, seed
from fleetstream.api.app import StateApi, create_app
from fleetstream.api.keys import ApiKeys
from fleetstream.io.kafka.topic_reader import TopicReadError
from fleetstream.io.redis.state_store import check_state_store
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


def run_api(config: Config, listen: str = DEFAULT_LISTEN, bootstrap: str = "127.0.0.1:9092",
            topic: str = "activations") -> None:
    """Serve until interrupted."""
    import uvicorn
    host, port = parse_listen(listen)
    service = ApiService(config, bootstrap, topic)
    try:
        uvicorn.run(service.asgi(), host=host, port=port, access_log=False, log_level="warning",
                    loop="auto", http="auto", lifespan="on", server_header=False,
                    proxy_headers=False,
                    h11_max_incomplete_event_size=16 * 1024)
    finally:
        service.close()
