"""A gateway's HTTP listener in a thread of its own, and what the tests read back from Kafka."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import socket
import threading
import time
import uuid
from typing import Any, Mapping

from confluent_kafka import Message

from fleetstream.ingest.http import serve_http
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from fleetstream.io.kafka.topic_reader import read_records
from fleetstream.settings.ingest import IngestSettings, parse_ingest_settings
from tests.helpers import free_port

SECRET = "hmac-secret-7f3a9c"
TOKEN = "bearer-token-51d2e8"
ENVIRON = {"SC_SECRET": SECRET, "MB_TOKEN": TOKEN}


def settings(bootstrap: str, http: Mapping[str, Any] | None = None,
             prefix: str | None = None) -> IngestSettings:
    """smartcar (hmac-sha256 in SC-Signature), mercedes (bearer) and bmw (no push), each on a
    topic of its own under a fresh prefix."""
    prefix = prefix or f"t{uuid.uuid4().hex[:10]}"
    return parse_ingest_settings({
        "kafka": {"bootstrap": bootstrap},
        "http": {"listen": f"127.0.0.1:{free_port()}", "max_body_bytes": 4096,
                 "body_timeout_s": 1.0, **(http or {})},
        "sources": {
            "smartcar": {"topic": f"{prefix}.smartcar", "push": {"auth": {
                "type": "hmac-sha256", "header": "SC-Signature", "secret_env": "SC_SECRET"}}},
            "mercedes": {"topic": f"{prefix}.mercedes",
                         "push": {"auth": {"type": "bearer", "token_env": "MB_TOKEN"}}},
            "bmw": {"topic": f"{prefix}.bmw", "mqtt": {"url": "mqtt://127.0.0.1:1"}}}},
        "test", ENVIRON)


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Gateway:
    """serve_http of `settings` on an event loop in a background thread."""

    def __init__(self, settings: IngestSettings, writer_timeout_s: float = 5.0,
                 create_topics: bool = True) -> None:
        self.settings = settings
        self.metrics = IngestMetrics()
        self.writer = RawWriter(settings.bootstrap_servers, timeout_s=writer_timeout_s)
        if create_topics:
            self.writer.ensure_topics([s.topic for s in settings.sources.values()])
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def port(self) -> int:
        return self.settings.http.port

    def topic(self, source: str) -> str:
        return self.settings.sources[source].topic

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        self._loop.run_until_complete(serve_http(self.settings, self.writer, self.metrics,
                                                 self._stop))

    def __enter__(self) -> "Gateway":
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the gateway did not start listening")

    def __exit__(self, *_exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
        self.writer.close()

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None,
             method: str = "POST") -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def records(self, source: str, timeout_s: float = 10.0) -> list[Message]:
        return list(read_records(self.settings.bootstrap_servers, self.topic(source),
                                 timeout_s=timeout_s))
