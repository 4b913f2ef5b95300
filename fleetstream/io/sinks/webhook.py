"""WebhookSink: documents POSTed to a customer's HTTPS endpoint, signed per Standard Webhooks.

Configuration (`sink:` of an application)::

    sink:
      type: webhook
      url: https://hooks.example.com/fleetstream   # required: the endpoint
      secret_env: FLEET_A_WEBHOOK_SECRET           # required: the variable holding the secret
      mode: batch            # batch (default): a JSON array per request; single: one document
      timeout_s: 15          # per request (connect, read, write)
      max_concurrency: 4     # requests in flight to this url from one worker

Every request follows https://www.standardwebhooks.com: the body is JSON,
and three headers sign it:

- `webhook-id`: the document's `message_id` (single) or the batch's `batch_id`
  (batch); both are derived from the documents, so a retried request carries
  the same id and the customer can drop a repeat;
- `webhook-timestamp`: the attempt's time, epoch seconds;
- `webhook-signature`: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`.

The secret is read from the environment variable `secret_env` (on the workers
too): the spec's `whsec_<base64>` form is decoded, any other value is used as
its UTF-8 bytes. It never appears in a message.

Answers: `2xx` is success. `410 Gone` disables the endpoint for this worker:
the write and every later one raise `WebhookDisabled` at once, without a
request; the first such error names the counter `webhook_disabled`, which
Deliver counts as `fleetstream:app/<id>.webhook_disabled` (the metric
`fleetstream_webhook_disabled`) so an alert can fire.
Another `4xx` raises `WebhookRefused`; both are `PermanentWriteError`s, so
Deliver sends the batch to the delivery dead letters. `408`, `429`, `3xx`
(redirects are not followed), `5xx`, timeouts and connection errors raise
`WebhookRetryable`, carrying a `Retry-After` as `retry_after_s`, which Deliver
waits at least. Deliver retries on `RETRY`, Svix's schedule: after 5 s, 5 min,
30 min, 2 h, 5 h, 10 h and 10 h (each jittered to 80-100 %), about 27 hours in
all; past it the batch is a delivery dead letter.

In `single` mode the documents of a batch go one request after the other, in
order; when a retry of the same batch follows a failure, the documents the
endpoint has already acknowledged are not sent again.

Concurrency: a worker keeps one semaphore per url (`max_concurrency` slots,
set by the first sink that opens it), shared by every sink and thread that
writes there, so a slow endpoint holds only its own slots and threads;
requests to other urls go on. Each sink keeps its connections alive (httpx).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
import time
from typing import Any, Mapping

import httpx

from fleetstream.io.sinks.base import Sink
from fleetstream.schemas.delivery import Batch, Batching
from fleetstream.schemas.errors import ConfigError, PermanentWriteError
from fleetstream.schemas.timestamps import retry_after_s
from fleetstream.transforms.delivery_retry import RetryPolicy

MODES = ("batch", "single")
SECRET_PREFIX = "whsec_"
#: Svix's retry schedule (seconds before each retry after the first attempt)
SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
WEBHOOK_RETRY = RetryPolicy(schedule=SCHEDULE_S, jitter=0.2,
                            max_elapsed_s=sum(SCHEDULE_S) + 3600.0)


class WebhookRetryable(RuntimeError):
    """A failed request worth repeating; `retry_after_s` is the endpoint's Retry-After, if any."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WebhookRefused(PermanentWriteError):
    """The endpoint refused the request with a 4xx that repeating cannot change."""


class WebhookDisabled(PermanentWriteError):
    """The endpoint answered 410 Gone: nothing more is sent to it from this worker."""


class _Endpoint:
    """What every sink of one worker shares about one url."""

    def __init__(self, slots: int) -> None:
        self.slots = threading.BoundedSemaphore(slots)
        self.disabled = False


_ENDPOINTS: dict[str, _Endpoint] = {}
_ENDPOINTS_LOCK = threading.Lock()


def _endpoint(url: str, slots: int) -> _Endpoint:
    with _ENDPOINTS_LOCK:
        endpoint = _ENDPOINTS.get(url)
        if endpoint is None:
            endpoint = _ENDPOINTS[url] = _Endpoint(slots)
        return endpoint


class WebhookSink(Sink):
    """Batches (or documents) as signed Standard Webhooks requests to one url."""

    TYPE = "webhook"
    DEFAULT_BATCHING = Batching(max_records=500, max_bytes=1 << 20, max_delay_s=1.0)
    REQUIRED = frozenset({"url", "secret_env"})
    OPTIONAL = frozenset({"mode", "timeout_s", "max_concurrency"})
    RETRY = WEBHOOK_RETRY

    def __init__(self, application_id: str, options: Mapping[str, Any]) -> None:
        super().__init__(application_id, options)
        where = f"applications[{application_id}].sink"
        self.url = _url(f"{where}.url", options.get("url"))
        self._key = _secret(f"{where}.secret_env", options.get("secret_env"))
        self.mode = options.get("mode", "batch")
        if self.mode not in MODES:
            raise ConfigError(f"{where}.mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        self.timeout_s = _number(f"{where}.timeout_s", options.get("timeout_s", 15.0))
        self.max_concurrency = options.get("max_concurrency", 4)
        if isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int) \
                or self.max_concurrency < 1:
            raise ConfigError(f"{where}.max_concurrency: expected a whole number >= 1, "
                              f"got {self.max_concurrency!r}")
        self._client: httpx.Client | None = None
        self._endpoint: _Endpoint | None = None
        self._acked: tuple[str, int] = ("", 0)   # (batch_id, documents acknowledged): single mode

    def open(self) -> None:
        if self._client is None:
            self._endpoint = _endpoint(self.url, self.max_concurrency)
            self._client = httpx.Client(
                timeout=self.timeout_s, follow_redirects=False,
                limits=httpx.Limits(max_connections=self.max_concurrency,
                                    max_keepalive_connections=self.max_concurrency),
                headers={"content-type": "application/json",
                         "user-agent": "FleetStream-Webhooks/1"})

    def write(self, batch: Batch) -> None:
        self.open()
        if self._endpoint.disabled:
            raise self._disabled()
        if self.mode == "batch":
            self._post(batch.batch_id, b"[" + b",".join(r.document for r in batch.records) + b"]")
            return
        done = self._acked[1] if self._acked[0] == batch.batch_id else 0
        for index in range(done, len(batch.records)):
            record = batch.records[index]
            self._post(record.message_id, record.document)
            self._acked = (batch.batch_id, index + 1)

    def _post(self, webhook_id: str, body: bytes) -> None:
        endpoint = self._endpoint
        with endpoint.slots:
            if endpoint.disabled:
                raise self._disabled()
            try:
                response = self._client.post(self.url, content=body,
                                             headers=sign(self._key, webhook_id, body))
            except httpx.HTTPError as error:
                raise WebhookRetryable(f"webhook {self.url}: {type(error).__name__}: {error}") \
                    from error
        status = response.status_code
        if 200 <= status < 300:
            return
        answer = f"webhook {self.url} answered {status} to {webhook_id}: {response.text[:200]!r}"
        if status == 410:
            error = WebhookDisabled(answer + "; the endpoint is disabled")
            if not endpoint.disabled:
                endpoint.disabled = True
                error.counter = "webhook_disabled"     # type: ignore[attr-defined]
            raise error
        if 400 <= status < 500 and status not in (408, 429):
            raise WebhookRefused(answer)
        raise WebhookRetryable(answer, retry_after_s(response.headers.get("retry-after"),
                                                     time.time(), None))

    def _disabled(self) -> WebhookDisabled:
        return WebhookDisabled(f"webhook {self.url} answered 410 Gone before: the endpoint is "
                               "disabled until the job restarts")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def sign(key: bytes, webhook_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`."""
    timestamp = str(int(time.time() if now is None else now))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}


def _url(where: str, value: Any) -> str:
    try:
        url = httpx.URL(value) if isinstance(value, str) else None
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"{where}: expected an http(s) url, got {value!r}")
    return str(url)


def _secret(where: str, name: Any) -> bytes:
    """The key from the environment variable `name`; errors name the variable, never its value."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: expected the name of an environment variable, got {name!r}")
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"{where}: environment variable {name} (the webhook secret) is not set")
    if not value.startswith(SECRET_PREFIX):
        return value.encode()
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigError(f"{where}: environment variable {name} starts with {SECRET_PREFIX} but "
                          "the rest is not a base64 key")
    return key


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: expected a number of seconds > 0, got {value!r}")
    return float(value)
