"""HTTP push: `POST /v1/push/<source>[/<vin>]`, each body written untouched to the source's
raw topic and answered 202 only after Kafka acknowledged it (DATA-CONTRACTS §8).

    await serve_http(settings, writer, metrics, stop)  # listen on settings.http until `stop`

The listener is `http_server` (a lean HTTP/1.1 server on httptools; it enforces the body
limit, the body timeout and keep-alive); this module is what the routes answer.

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
import re
import ssl
import time
from typing import Any, Mapping
from urllib.parse import unquote

import orjson

from fleetstream.ingest.http_server import Answer, Limits, Request, start_server, stop_server
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
PUSH_PREFIX = "/v1/push/"

_VIN = re.compile(VIN_PATTERN)
_TEXT = "text/plain; charset=utf-8"
_ACCEPTED = Answer(202)
_NOT_FOUND = Answer(404, b"Not Found", _TEXT)
_METHOD_NOT_ALLOWED = Answer(405, b"use POST", _TEXT, (("Allow", "POST"),))
_UNKNOWN_SOURCE = Answer(404, b"unknown source", _TEXT)
_UNAVAILABLE = Answer(503, b"Kafka unavailable, retry later", _TEXT,
                      (("Retry-After", str(RETRY_AFTER_S)),))
_HEALTHY = Answer(200, b"ok", _TEXT)
_UNHEALTHY = Answer(503, b"Kafka unreachable", _TEXT)
_HEALTHZ_METHODS = Answer(405, b"use GET", _TEXT, (("Allow", "GET, HEAD"),))
_METRICS_METHODS = Answer(405, b"use GET", _TEXT, (("Allow", "GET"),))
_BODY_ERRORS = {
    400: (Answer(400, b"body cut short or malformed", _TEXT, close=True), "body unreadable"),
    408: (Answer(408, b"body not received in time", _TEXT, close=True),
          "body not received in time"),
}


class _Push:
    """The routes of one listener (`http_server.Routes`), sharing the writer, metrics and
    the health cache. A push's route is (source name, VIN or None)."""

    def __init__(self, settings: IngestSettings, writer: RawWriter,
                 metrics: IngestMetrics) -> None:
        self.sources: Mapping[str, SourceSettings] = {
            name: source for name, source in settings.sources.items() if source.push}
        self.max_body = settings.http.max_body_bytes
        self.writer, self.metrics = writer, metrics
        tls = settings.http.tls or {}
        #: client certificate CN -> the sources it may push to (None: any source)
        self.subjects: dict[str, frozenset[str]] | None = (
            {str(cn): frozenset(sources) for cn, sources in tls["subjects"].items()}
            if tls.get("subjects") is not None else None)
        self.tls = bool(tls)
        self._too_large = Answer(413, f"body over {self.max_body} bytes".encode(), _TEXT,
                                 close=True)
        #: the metrics' children by label values (labels() is a lookup with a lock)
        self._counters: dict[tuple[str, int], Any] = {}
        self._records: dict[str, Any] = {}
        self._healthy, self._checked_at = False, float("-inf")
        self._health_lock = asyncio.Lock()

    # --- http_server.Routes ---------------------------------------------------------------

    def head(self, request: Request) -> Answer | None:
        """The answer a request gets from its head alone, or None to read its body."""
        path = request.path
        if path.startswith(PUSH_PREFIX):
            route = _push_route(path[len(PUSH_PREFIX):])
            if route is None:
                return _NOT_FOUND
            request.route = route
            name = route[0]
            source = self.sources.get(name)
            answer = self._refusal(request, source)
            if answer is not None:
                self._count(name if source else UNKNOWN_SOURCE, answer.status)
            return answer
        if path == "/healthz":
            return None if request.method in ("GET", "HEAD") else _HEALTHZ_METHODS
        if path == "/metrics":
            return None if request.method == "GET" else _METRICS_METHODS
        return _NOT_FOUND

    def complete(self, request: Request) -> Answer | asyncio.Future[Answer]:
        """The answer to a request whose head was accepted, now that its body is in."""
        if request.route is None:
            return asyncio.ensure_future(self._healthz()) if request.path == "/healthz" \
                else Answer(200, self.metrics.exposition(),
                            "text/plain; version=0.0.4; charset=utf-8")
        name, vin = request.route
        source = self.sources[name]
        answer = self._push(request, source, vin)
        if isinstance(answer, Answer):
            self._count(name, answer.status)
        return answer

    def body_error(self, request: Request, status: int) -> Answer:
        """The answer to a body over the limit (413), late (408) or cut short (400)."""
        if status == 413:
            answer, reason = self._too_large, f"body over {self.max_body} bytes"
        else:
            answer, reason = _BODY_ERRORS.get(status, _BODY_ERRORS[400])
        if request.route is not None:
            name = request.route[0]
            log.info("push to %s: %s", name, reason)
            self._count(name if name in self.sources else UNKNOWN_SOURCE, answer.status)
        return answer

    # --- a push ---------------------------------------------------------------------------

    def _refusal(self, request: Request, source: SourceSettings | None) -> Answer | None:
        """What the head of a push is refused with (405, 404, 403, 401), or None."""
        if request.method != "POST":
            return _METHOD_NOT_ALLOWED
        if source is None:
            return _UNKNOWN_SOURCE
        auth: PushAuth = source.push  # type: ignore[assignment]
        if self.tls and not self._subject_may_push(request, source.name):
            return _refused(403, source.name, "client certificate may not push to this source")
        if auth.type == "bearer" and not _bearer_ok(request, auth.secret):
            return _refused(401, source.name, "missing or wrong bearer token")
        if auth.type == "hmac-sha256" and not request.headers.get(auth.header.lower().encode()):
            return _refused(401, source.name, "missing signature")
        return None

    def _push(self, request: Request, source: SourceSettings,
              vin: str | None) -> Answer | asyncio.Future[Answer]:
        body = request.body
        auth: PushAuth = source.push  # type: ignore[assignment]
        if auth.type == "hmac-sha256":
            if not _signature_ok(request, auth, body):
                return _refused(401, source.name, "missing or wrong signature")
            if _may_be_verify(body):
                verify = _verify_answer(body, auth.secret)
                if verify is not None:
                    return verify
        started = time.perf_counter()
        try:
            acked = self.writer.submit(source.topic, body, vin.encode() if vin else None,
                                       request.received_ms)
        except (RecordRefused, KafkaUnavailable) as error:
            return self._written(source.name, started, error)
        answer: asyncio.Future[Answer] = acked.get_loop().create_future()
        acked.add_done_callback(lambda done: answer.set_result(
            self._written(source.name, started, done.exception())))
        return answer

    def _written(self, name: str, started: float, error: BaseException | None) -> Answer:
        """The answer once the writer is done with a record (`error` None: acknowledged)."""
        self.metrics.produce_latency.observe(time.perf_counter() - started)
        if error is None:
            records = self._records.get(name)
            if records is None:
                records = self._records[name] = self.metrics.records.labels(source=name,
                                                                            via="push")
            records.inc()
            answer = _ACCEPTED
        elif isinstance(error, RecordRefused):
            answer = _refused(413 if error.too_large else 400, name, str(error))
        else:
            log.warning("push to %s: answered 503, %s", name, error)
            answer = _UNAVAILABLE
        self._count(name, answer.status)
        return answer

    def _count(self, source: str, status: int) -> None:
        counter = self._counters.get((source, status))
        if counter is None:
            counter = self._counters[source, status] = self.metrics.requests.labels(
                source=source, code=str(status))
        counter.inc()

    def _subject_may_push(self, request: Request, source: str) -> bool:
        cert = request.transport.get_extra_info("peercert")
        if not cert:
            return False
        if self.subjects is None:
            return True
        names = [value for rdn in cert.get("subject", ()) for key, value in rdn
                 if key == "commonName"]
        return any(source in self.subjects.get(cn, ()) for cn in names)

    async def _healthz(self) -> Answer:
        async with self._health_lock:
            if time.monotonic() - self._checked_at >= HEALTH_CACHE_S:
                loop = asyncio.get_running_loop()
                self._healthy = await loop.run_in_executor(None, self.writer.reachable,
                                                           HEALTH_TIMEOUT_S)
                self._checked_at = time.monotonic()
        return _HEALTHY if self._healthy else _UNHEALTHY


def _push_route(rest: str) -> tuple[str, str | None] | None:
    """(source, VIN or None) of the path after /v1/push/, or None when it is no push path."""
    parts = [unquote(part) for part in rest.split("/")]
    if not parts[0] or len(parts) > 2 or "/" in parts[0]:
        return None
    if len(parts) == 1:
        return parts[0], None
    return (parts[0], parts[1]) if _VIN.fullmatch(parts[1]) else None


def _bearer_ok(request: Request, token: bytes) -> bool:
    scheme, _, given = request.headers.get(b"authorization", b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)


def _signature_ok(request: Request, auth: PushAuth, body: bytes) -> bool:
    given = request.headers.get(auth.header.lower().encode())
    if not given:
        return False
    expected = hmac.new(auth.secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(given.strip().lower(), expected)


def _may_be_verify(body: bytes) -> bool:
    return len(body) <= VERIFY_MAX_BYTES and body.lstrip()[:1] == b"{" and b'"VERIFY"' in body


def _verify_answer(body: bytes, secret: bytes) -> Answer | None:
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
        return Answer(400, b"VERIFY without a string data.challenge", _TEXT)
    answer = hmac.new(secret, challenge.encode(), hashlib.sha256).hexdigest()
    return Answer(200, orjson.dumps({"challenge": answer}), "application/json")


def _refused(status: int, source: str, reason: str) -> Answer:
    log.info("push to %s refused (%d): %s", source, status, reason)
    return Answer(status, reason.encode(), _TEXT)


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
    # the body is written as received (a Content-Encoding is not undone), and the size
    # limit counts the bytes that came, not what they would inflate to
    limits = Limits(http.max_body_bytes, http.body_timeout_s, KEEPALIVE_TIMEOUT_S)
    server = await start_server(_Push(settings, writer, metrics), http.host, http.port, limits,
                                tls_context(http.tls) if http.tls else None, reuse_port)
    log.info("HTTP push on %s://%s:%d", "https" if http.tls else "http", http.host, http.port)
    try:
        await stop.wait()
    finally:
        await stop_server(server, writer.timeout_s + 1)
