"""WebhookSink against a local HTTP endpoint: signatures, answers, Retry-After, 410, concurrency."""
from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import Any, Iterator

import apache_beam as beam
import orjson
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug import Request, Response

from fleetstream.io.sinks.registry import application_sink, build_sink
from fleetstream.io.sinks.webhook import (SCHEDULE_S, WEBHOOK_RETRY, WebhookDisabled,
                                          WebhookRefused, WebhookRetryable, WebhookSink)
from fleetstream.schemas.errors import ConfigError, PermanentWriteError
from fleetstream.schemas.timestamps import retry_after_s
from fleetstream.settings.config import parse_config
from fleetstream.transforms.deliver import Deliver
from fleetstream.transforms.delivery_retry import RetryPolicy

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]

SECRET = "whsec_" + base64.b64encode(b"fleetstream-webhook-test-key-32b").decode()
FAST_RETRY = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.02, max_elapsed_s=5)


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    """A threaded local endpoint (concurrent requests are served at once)."""
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def path(server: HTTPServer) -> Iterator[str]:
    """A fresh path: a url of its own, so no endpoint state leaks between tests."""
    server.clear()
    yield f"/hook/{uuid.uuid4().hex}"
    server.clear()


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_A_WEBHOOK_SECRET", SECRET)


def webhook(server: HTTPServer, path: str, **options: Any) -> WebhookSink:
    sink, _ = build_sink("fleet-a", {"type": "webhook", "url": server.url_for(path),
                                     "secret_env": "FLEET_A_WEBHOOK_SECRET", **options})
    return sink  # type: ignore[return-value]


def received(server: HTTPServer) -> list[Request]:
    return [request for request, _ in server.log]


def test_a_batch_is_one_signed_json_array_in_order(server, path, make_batch):
    server.expect_request(path, method="POST").respond_with_data("ok")
    batch = make_batch(vins=("V1", "V2"), per_vehicle=3)
    sink = webhook(server, path)
    sink.write(batch)
    sink.close()

    [request] = received(server)
    body = request.get_data()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == batch.batch_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["webhook-signature"].startswith("v1,")
    documents = Webhook(SECRET).verify(body, dict(request.headers))
    assert documents == [orjson.loads(r.document) for r in batch.records]
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another-application-secret-key!!").decode()).verify(
            body, dict(request.headers))


def test_single_mode_sends_one_signed_document_per_request_in_order(server, path, make_batch,
                                                                    monkeypatch):
    monkeypatch.setenv("FLEET_A_WEBHOOK_SECRET", "a plain secret, not whsec_ form")
    server.expect_request(path, method="POST").respond_with_data("", status=204)
    batch = make_batch(vins=("V1", "V2"), per_vehicle=2)
    webhook(server, path, mode="single").write(batch)

    requests = received(server)
    assert [r.headers["webhook-id"] for r in requests] == [r.message_id for r in batch.records]
    for request, record in zip(requests, batch.records):
        verified = Webhook(b"a plain secret, not whsec_ form").verify(request.get_data(),
                                                                   dict(request.headers))
        assert verified == orjson.loads(record.document)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(requests[0].get_data(), dict(requests[0].headers))


def test_single_mode_retry_skips_what_the_endpoint_acknowledged(server, path, make_batch):
    batch = make_batch(vins=("V1",), per_vehicle=4)
    third = batch.records[2].message_id
    answers = iter([503])

    def handler(request: Request) -> Response:
        if request.headers["webhook-id"] == third:
            return Response("busy", status=next(answers, 200))
        return Response("ok")

    server.expect_request(path).respond_with_handler(handler)
    sink = webhook(server, path, mode="single")
    with pytest.raises(WebhookRetryable):
        sink.write(batch)
    sink.write(batch)
    ids = [r.headers["webhook-id"] for r in received(server)]
    assert ids == [r.message_id for r in batch.records[:3]] + [r.message_id for r in batch.records[2:]]


@pytest.mark.parametrize("status, retried", [
    (500, True), (502, True), (503, True), (408, True), (429, True), (301, True),
    (400, False), (401, False), (404, False), (422, False)])
def test_answers_are_retried_or_permanent(server, path, make_batch, status, retried):
    server.expect_request(path).respond_with_data("nope", status=status)
    with pytest.raises(Exception) as raised:
        webhook(server, path).write(make_batch())
    if retried:
        assert isinstance(raised.value, WebhookRetryable)
        assert not isinstance(raised.value, PermanentWriteError)
    else:
        assert isinstance(raised.value, WebhookRefused)
        assert isinstance(raised.value, PermanentWriteError)   # Deliver does not retry it
    assert str(status) in str(raised.value)


def test_a_connection_error_is_retried(make_batch):
    sink, _ = build_sink("fleet-a", {"type": "webhook", "url": "http://127.0.0.1:9/hook",
                                     "secret_env": "FLEET_A_WEBHOOK_SECRET"})
    with pytest.raises(WebhookRetryable, match="ConnectError"):
        sink.write(make_batch())


def test_retry_after_is_carried(server, path, make_batch):
    server.expect_request(path).respond_with_data("slow down", status=429,
                                                  headers={"Retry-After": "7"})
    with pytest.raises(WebhookRetryable) as raised:
        webhook(server, path).write(make_batch())
    assert raised.value.retry_after_s == 7
    now = time.time()
    assert 119 <= retry_after_s(time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                              time.gmtime(now + 120)), now, None) <= 120
    assert retry_after_s(None, now, None) is None and retry_after_s("soon", now, None) is None


def _keep(letter: dict) -> None:
    DEAD.append(letter)


DEAD: list[dict] = []


def _deliver(server: HTTPServer, path: str, count: int, retry: RetryPolicy | None) -> Any:
    """Deliver `count` documents as a batch job to the webhook; (pipeline result, dead letters)."""
    from fleetstream.dev.sink_pytest_plugin import sample_batch

    DEAD.clear()
    applications = parse_config({"applications": [{
        "id": "fleet-a", "permissions": ["diagnostics.*"],
        "sink": {"type": "webhook", "url": server.url_for(path),
                 "secret_env": "FLEET_A_WEBHOOK_SECRET"}}]}).applications
    records = sample_batch(vins=("V1",), per_vehicle=count).records
    pipeline = TestPipeline()
    _ = (pipeline | beam.Create([("fleet-a", r) for r in records])
         | Deliver(applications, application_sink, retry) | beam.Map(_keep))
    result = pipeline.run()
    result.wait_until_finish()
    return result, list(DEAD)


def test_deliver_waits_the_retry_after(server, path):
    arrivals: list[float] = []
    answers = iter([Response("slow down", status=429, headers={"Retry-After": "1"})])

    def handler(_: Request) -> Response:
        arrivals.append(time.monotonic())
        return next(answers, Response("ok"))

    server.expect_request(path).respond_with_handler(handler)
    _, dead = _deliver(server, path, 3, FAST_RETRY)   # its own backoff is 10-20 ms

    assert dead == []
    first, second = received(server)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert arrivals[1] - arrivals[0] >= 1.0


def test_410_disables_the_endpoint_and_counts_it(server, path, make_batch):
    server.expect_request(path).respond_with_data("gone", status=410)
    sink = webhook(server, path)
    with pytest.raises(WebhookDisabled, match="410"):
        sink.write(make_batch())
    with pytest.raises(WebhookDisabled, match="disabled"):
        sink.write(make_batch(vins=("V9",)))
    with pytest.raises(WebhookDisabled):    # another sink of the worker for the same url
        webhook(server, path).write(make_batch())
    assert len(server.log) == 1


def test_410_through_deliver_is_a_dead_letter_and_a_counter(server, path):
    server.expect_request(path).respond_with_data("gone", status=410)
    result, dead = _deliver(server, path, 2, None)   # the sink's own schedule: never used here
    assert len(dead) == 1 and "WebhookDisabled" in dead[0]["errors"][0]["reason"]
    [counter] = result.metrics().query(MetricsFilter().with_name(
        "app/fleet-a.webhook_disabled"))["counters"]
    assert counter.committed == 1
    assert len(server.log) == 1


def test_max_concurrency_bounds_requests_in_flight_and_spares_other_endpoints(server, path,
                                                                             make_batch):
    in_flight, peak, done, lock = [0], [0], [0], threading.Lock()

    def slow(request: Request) -> Response:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.5)
        with lock:
            in_flight[0] -= 1
            done[0] += 1
        return Response("ok")

    other = path + "-other-application"
    server.expect_request(path).respond_with_handler(slow)
    server.expect_request(other).respond_with_data("ok")
    writers = [threading.Thread(target=webhook(server, path, max_concurrency=2).write,
                                args=(make_batch(vins=(f"V{n}",)),)) for n in range(6)]
    for writer in writers:
        writer.start()
    time.sleep(0.1)      # the slow endpoint's slots are taken, four writers wait for one
    webhook(server, other, max_concurrency=2).write(make_batch())
    slow_done_when_other_was = done[0]
    for writer in writers:
        writer.join()

    assert peak[0] == 2
    # the other endpoint did not queue behind the slow one's six requests (three rounds of
    # 0.5 s): when it was written, at most the first round had finished (no clock asserted)
    assert slow_done_when_other_was <= 2
    assert len([r for r in received(server) if r.path == path]) == 6


def test_default_schedule_is_svix_like_and_gives_up_after_it():
    assert WebhookSink.RETRY is WEBHOOK_RETRY
    assert SCHEDULE_S == (5, 300, 1800, 7200, 18000, 36000, 36000)
    for attempt, ceiling in enumerate(SCHEDULE_S, 1):
        assert 0.8 * ceiling <= WEBHOOK_RETRY.backoff_s(attempt) <= ceiling
        assert not WEBHOOK_RETRY.gives_up(attempt, sum(SCHEDULE_S[:attempt - 1]), ceiling)
    assert WEBHOOK_RETRY.gives_up(len(SCHEDULE_S) + 1, 0, 1)


@pytest.mark.parametrize("options, message", [
    ({"secret_env": "FLEET_A_WEBHOOK_SECRET"}, r": sink type 'webhook' needs url"),
    ({"url": "https://x.example/h"}, r": sink type 'webhook' needs secret_env"),
    ({"url": "ftp://x.example/h", "secret_env": "FLEET_A_WEBHOOK_SECRET"}, r"\.url: expected an http"),
    ({"url": "https://x.example/h", "secret_env": "NOT_SET_ANYWHERE"},
     r"\.secret_env: environment variable NOT_SET_ANYWHERE \(the webhook secret\) is not set"),
    ({"url": "https://x.example/h", "secret_env": "FLEET_A_WEBHOOK_SECRET", "mode": "stream"},
     r"\.mode: expected one of batch, single"),
    ({"url": "https://x.example/h", "secret_env": "FLEET_A_WEBHOOK_SECRET", "max_concurrency": 0},
     r"\.max_concurrency: expected a whole number"),
    ({"url": "https://x.example/h", "secret_env": "FLEET_A_WEBHOOK_SECRET", "timeout_s": -1},
     r"\.timeout_s: expected a number of seconds"),
    ({"url": "https://x.example/h", "secret_env": "FLEET_A_WEBHOOK_SECRET", "secret": "s"},
     r": unknown key\(s\) secret"),
])
def test_config_errors_name_the_key(options, message):
    with pytest.raises(ConfigError, match=r"^applications\[fleet-a\]\.sink" + message) as refused:
        build_sink("fleet-a", {"type": "webhook", **options})
    assert SECRET not in str(refused.value)


def test_a_broken_whsec_secret_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv("FLEET_A_WEBHOOK_SECRET", "whsec_not*base64!")
    with pytest.raises(ConfigError, match=r"\.secret_env: .*not a base64 key") as refused:
        build_sink("fleet-a", {"type": "webhook", "url": "https://x.example/h",
                               "secret_env": "FLEET_A_WEBHOOK_SECRET"})
    assert "not*base64!" not in str(refused.value)
