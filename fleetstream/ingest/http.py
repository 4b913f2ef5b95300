"""HTTP push: `POST /v1/push/<source>[/<vin>]`, each body written untouched to the source's
raw topic and answered 202 only after Kafka acknowledged it (DATA-CONTRACTS §8).

    app = build_app(settings, writer, metrics)       # aiohttp web.Application
    await serve_http(settings, writer, metrics, stop)  # listen on settings.http until `stop`

Answers to a push, checked in this order; none but 202 writes anything:

* `405` a method other than POST (with `Allow: POST`);
* `404` a source that is not configured, or that has no `push:` section;
* `403` with mutual TLS (`http.tls`), a client certificate whose subject CN may not push to
  this source (`http.tls.subjects: {CN: [source, ...]}`);
* `401` missing or wrong credentials: bearer `Authorization: Bearer <token>`, or the hex
  HMAC-SHA256 of the raw body in the source's header; both compared in constant time;
* `413` a body over `http.max_body_bytes` (Content-Length is checked before reading; a
  chunked body is read only up to the limit); the connection is closed;
* `408` a body that does not arrive within `http.body_timeout_s` (default 10 s) of the
  request's headers (a client trickling its body); `400` a body cut short (wrong
  Content-Length, broken chunks);
* `200 {"challenge": hex HMAC-SHA256(secret, C)}` a Smartcar-style verification request
  `{"eventType": "VERIFY", "data": {"challenge": C}}` on an hmac-sha256 source, after its
  signature was checked; `400` when such a request has no string challenge. Only a small
  body that starts with `{` and contains `"VERIFY"` is ever parsed, and one that is not
  JSON, or whose eventType is something else, is a normal payload;
* `503` with `Retry-After` when Kafka did not acknowledge within the writer's timeout;
* `202` once Kafka acknowledged the record: value = the body's bytes as received (a
  Content-Encoding is not undone), key = the VIN of the
  path (none without one), timestamp = when the request's headers arrived.

`GET /healthz` is 200 while Kafka answers a metadata request (checked at most every
HEALTH_CACHE_S), else 503; `GET /metrics` is the process's Prometheus text. Every push
answer counts in `fleetstream_ingest_requests_total{source, code}` (source `unknown` for a
name that is not configured, so that callers cannot make up label values), every record
written in `fleetstream_ingest_records_total{source, via="push"}`. Secrets never appear in
logs or answers: a refused request is logged with its source and the reason only.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
import time
from typing import Any, Mapping

import orjson
from aiohttp import web

from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import KafkaUnavailable, RawWriter, RecordRefused
from fleetstream.settings.ingest import IngestSettings, PushAuth, SourceSettings

log = logging.getLogger(__name__)

#: an idle keep-alive connection is closed after this many seconds
KEEPALIVE_TIMEOUT_S = 75.0
#: a body at most this big may be a VERIFY request (larger ones are never parsed)
VERIFY_MAX_BYTES = 4096
#: /healthz asks Kafka at most this often
HEALTH_CACHE_S = 1.0
HEALTH_TIMEOUT_S = 1.0
#: what a 503 tells the sender to wait before retrying
RETRY_AFTER_S = 5
#: a VIN (or other vehicle id) in the path
VIN_PATTERN = r"[A-Za-z0-9._-]{1,64}"
UNKNOWN_SOURCE = "unknown"

_TEXT = "text/plain"


class _TooLarge(Exception):
    pass


class _Push:
    """The request handlers of one listener, sharing the writer, metrics and health cache."""

    def __init__(self, settings: IngestSettings, writer: RawWriter,
                 metrics: IngestMetrics) -> None:
        self.sources: Mapping[str, SourceSettings] = {
            name: source for name, source in settings.sources.items() if source.push}
        self.max_body = settings.http.max_body_bytes
        self.writer, self.metrics = writer, metrics
        self.body_timeout_s = settings.http.body_timeout_s
        tls = settings.http.tls or {}
        #: client certificate CN -> the sources it may push to (None: any source)
        self.subjects: dict[str, frozenset[str]] | None = (
            {str(cn): frozenset(sources) for cn, sources in tls["subjects"].items()}
            if tls.get("subjects") is not None else None)
        self.tls = bool(tls)
        self._healthy, self._checked_at = False, float("-inf")
        self._health_lock = asyncio.Lock()

    async def push(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["source"]
        source = self.sources.get(name)
        response = await self._answer(request, source)
        self.metrics.requests.labels(source=name if source else UNKNOWN_SOURCE,
                                     code=str(response.status)).inc()
        return response

    async def _answer(self, request: web.Request,
                      source: SourceSettings | None) -> web.StreamResponse:
        received_ms = int(time.time() * 1000)
        if request.method != "POST":
            return web.Response(status=405, text="use POST", headers={"Allow": "POST"},
                                content_type=_TEXT)
        if source is None:
            return web.Response(status=404, text="unknown source", content_type=_TEXT)
        auth: PushAuth = source.push  # type: ignore[assignment]
        if self.tls and not self._subject_may_push(request, source.name):
            return _refused(403, source.name, "client certificate may not push to this source")
        if auth.type == "bearer" and not _bearer_ok(request, auth.secret):
            return _refused(401, source.name, "missing or wrong bearer token")
        if auth.type == "hmac-sha256" and not request.headers.get(auth.header):
            return _refused(401, source.name, "missing signature")
        length = request.content_length
        if length is not None and length > self.max_body:
            return _closing(413, f"body over {self.max_body} bytes")
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await _read_capped(request, self.max_body)
        except _TooLarge:
            return _closing(413, f"body over {self.max_body} bytes")
        except TimeoutError:
            log.info("push to %s: body not received within %.0f s", source.name,
                     self.body_timeout_s)
            return _closing(408, "body not received in time")
        except Exception as error:  # noqa: BLE001 - a broken body is the sender's fault
            log.info("push to %s: body unreadable (%s)", source.name, type(error).__name__)
            return _closing(400, "body cut short or malformed")
        if auth.type == "hmac-sha256":
            if not _signature_ok(request, auth, body):
                return _refused(401, source.name, "missing or wrong signature")
            if _may_be_verify(body):
                verify = _verify_answer(body, auth.secret)
                if verify is not None:
                    return verify
        vin = request.match_info.get("vin")
        try:
            with self.metrics.produce_latency.time():
                await self.writer.write(source.topic, body, vin.encode() if vin else None,
                                        received_ms)
        except RecordRefused as error:
            return _refused(413 if error.too_large else 400, source.name, str(error))
        except KafkaUnavailable as error:
            log.warning("push to %s: answered 503, %s", source.name, error)
            return web.Response(status=503, text="Kafka unavailable, retry later",
                                headers={"Retry-After": str(RETRY_AFTER_S)},
                                content_type=_TEXT)
        self.metrics.records.labels(source=source.name, via="push").inc()
        return web.Response(status=202)

    def _subject_may_push(self, request: web.Request, source: str) -> bool:
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            return False
        if self.subjects is None:
            return True
        names = [value for rdn in cert.get("subject", ()) for key, value in rdn
                 if key == "commonName"]
        return any(source in self.subjects.get(cn, ()) for cn in names)

    async def healthz(self, _request: web.Request) -> web.Response:
        async with self._health_lock:
            if time.monotonic() - self._checked_at >= HEALTH_CACHE_S:
                loop = asyncio.get_running_loop()
                self._healthy = await loop.run_in_executor(None, self.writer.reachable,
                                                           HEALTH_TIMEOUT_S)
                self._checked_at = time.monotonic()
        if self._healthy:
            return web.Response(text="ok", content_type=_TEXT)
        return web.Response(status=503, text="Kafka unreachable", content_type=_TEXT)

    async def metrics_text(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The whole body, or _TooLarge as soon as more than `limit` bytes came."""
    if request.content_length is not None:
        return await request.content.read()   # the parser stops at Content-Length (<= limit)
    chunks, size = [], 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)


def _bearer_ok(request: web.Request, token: bytes) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token)


def _signature_ok(request: web.Request, auth: PushAuth, body: bytes) -> bool:
    given = request.headers.get(auth.header)
    if not given:
        return False
    expected = hmac.new(auth.secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(given.strip().lower().encode("utf-8", "replace"), expected)


def _may_be_verify(body: bytes) -> bool:
    return len(body) <= VERIFY_MAX_BYTES and body.lstrip()[:1] == b"{" and b'"VERIFY"' in body


def _verify_answer(body: bytes, secret: bytes) -> web.Response | None:
    """The answer to a verification request, or None when the body is a normal payload."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or parsed.get("eventType") != "VERIFY":
        return None
    data = parsed.get("data")
    challenge = data.get("challenge") if isinstance(data, dict) else None
    if not isinstance(challenge, str):
        return web.Response(status=400, text="VERIFY without a string data.challenge",
                            content_type=_TEXT)
    answer = hmac.new(secret, challenge.encode(), hashlib.sha256).hexdigest()
    return web.json_response({"challenge": answer})


def _refused(status: int, source: str, reason: str) -> web.Response:
    log.info("push to %s refused (%d): %s", source, status, reason)
    return web.Response(status=status, text=reason, content_type=_TEXT)


def _closing(status: int, text: str) -> web.Response:
    """An answer after which the connection closes (the rest of the body is not read)."""
    response = web.Response(status=status, text=text, content_type=_TEXT)
    response.force_close()
    return response


def build_app(settings: IngestSettings, writer: RawWriter,
              metrics: IngestMetrics) -> web.Application:
    """The push, health and metrics routes of one listener."""
    handlers = _Push(settings, writer, metrics)
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app.router.add_route("*", "/v1/push/{source}", handlers.push)
    app.router.add_route("*", "/v1/push/{source}/{vin:" + VIN_PATTERN + "}", handlers.push)
    app.router.add_get("/healthz", handlers.healthz, allow_head=True)
    app.router.add_get("/metrics", handlers.metrics_text)
    return app


def tls_context(tls: Mapping[str, Any]) -> ssl.SSLContext:
    """A server context that requires a client certificate signed by `client_ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls["client_ca"])
    context.load_cert_chain(tls["cert"], tls["key"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def serve_http(settings: IngestSettings, writer: RawWriter, metrics: IngestMetrics,
                     stop: asyncio.Event, reuse_port: bool = False) -> None:
    """Listen on `settings.http` until `stop` is set, then finish the requests in flight.

    `reuse_port` lets several processes listen on the same port (`--workers`)."""
    http = settings.http
    # auto_decompress off: a Content-Encoding body is written as received, and the size
    # limit counts the bytes that came, not what they would inflate to
    runner = web.AppRunner(build_app(settings, writer, metrics), access_log=None,
                           keepalive_timeout=KEEPALIVE_TIMEOUT_S, auto_decompress=False,
                           shutdown_timeout=writer.timeout_s + 1)
    await runner.setup()
    site = web.TCPSite(runner, http.host, http.port, backlog=1024, reuse_port=reuse_port or None,
                       ssl_context=tls_context(http.tls) if http.tls else None)
    await site.start()
    log.info("HTTP push on %s://%s:%d", "https" if http.tls else "http", http.host, http.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
