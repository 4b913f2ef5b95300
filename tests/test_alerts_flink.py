"""End to end: a burst of malformed messages reaches Slack as an alert, and its end as resolved.

The streaming job runs on the local Flink cluster; a Prometheus and an Alertmanager of
this test's own (shorter intervals and windows than the shipped ones) scrape Flink's
reporters; pytest-httpserver stands in for Slack's incoming webhook.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections import Counter
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from pytest_httpserver import HTTPServer

from fleetstream.dev.alertmanager import AlertmanagerService
from fleetstream.dev.prometheus import PrometheusService
from fleetstream.io.kafka.producer import produce_envelopes
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.monitoring.exporter import FleetCollector
from fleetstream.monitoring.rules import Thresholds
from fleetstream.monitoring.scrape_config import write_targets
from fleetstream.pipelines.stream import ensure_topics, submit_stream
from fleetstream.runtime import flink_jobs
from fleetstream.settings.config import parse_config
from fleetstream.settings.stream import FlinkSettings, StreamSettings
from fleetstream.simulator import SOURCES, fleet_vins, simulate_keyed

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

#: what the test's rules use: 20 % failed over one minute, firing at once
THRESHOLDS = Thresholds(failure_share=0.2, failure_window="1m", for_duration="0s")
FAILING_SOURCE = "tesla"


@pytest.fixture
def slack(httpserver: HTTPServer) -> HTTPServer:
    httpserver.expect_request("/slack", method="POST").respond_with_data("ok")
    return httpserver


@pytest.fixture
def alerting(slack: HTTPServer, tmp_path: Path) -> Iterator[PrometheusService]:
    """A Prometheus (2 s scrapes and evaluations) sending to an Alertmanager sending to Slack."""
    alertmanager = AlertmanagerService(19095, name="alertmanager-test",
                                       slack_url=slack.url_for("/slack"),
                                       group_wait_s=1, group_interval_s=2)
    prometheus = PrometheusService(19090, name="prometheus-test", alertmanager="127.0.0.1:19095",
                                   thresholds=THRESHOLDS, scrape_interval_s=2)
    alertmanager.start()
    try:
        prometheus.start()
        yield prometheus
    finally:
        prometheus.stop()
        alertmanager.stop()


def _slack_messages(slack: HTTPServer) -> list[dict]:
    return [orjson.loads(request.get_data()) for request, _ in slack.log]


def _wait_for_message(slack: HTTPServer, status: str, timeout_s: float) -> tuple[dict, float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in _slack_messages(slack):
            if any(status in attachment.get("title", "") for attachment in
                   message.get("attachments", [])):
                return message, time.monotonic()
        time.sleep(1)
    raise AssertionError(f"no {status} message within {timeout_s:.0f} s; got "
                         f"{_slack_messages(slack)}")


def test_a_burst_of_malformed_messages_alerts_slack_and_resolves(
        flink_cluster, kafka_service, alerting, slack: HTTPServer, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    raw_topics = {source: f"{run}.raw.{source}" for source in SOURCES}
    vins = fleet_vins(8, seed=3)
    config = parse_config({
        "applications": [{"id": "fleet", "permissions": ["diagnostics.*"],
                          "sink": {"type": "file", "path": str(tmp_path / "fleet"),
                                   "max_delay": 0.5}}],
        "activations": [{"vin": vin, "application_id": "fleet", "status": "approved", "at": 1}
                        for vin in vins]})
    settings = StreamSettings(
        config, FlinkSettings(job_endpoint=flink_cluster.job_endpoint,
                              environment_config=flink_cluster.worker_pool, parallelism=1,
                              checkpointing_interval_ms=2000),
        KafkaSettings(kafka_service.bootstrap, f"test-{run}", "earliest",
                      flink_cluster.expansion_service),
        raw_topics, f"{run}.activations", f"{run}.dead-letters", None)
    ensure_topics(settings)
    known = tuple(flink_jobs.running_jobs())
    submit_stream(settings)
    flink_jobs.wait_running(known=known)

    exporter, collector = _serve_exporter(settings)
    write_targets(alerting.targets_dir, "exporter", [f"127.0.0.1:{exporter.server_port}"])
    produced: Counter[str] = Counter()
    burst = threading.Event()
    stop = threading.Event()

    def traffic() -> Iterator[tuple[str, dict]]:
        """Clean messages of every source; malformed Tesla ones too while `burst` is set."""
        while not stop.is_set():
            for vin, envelope in simulate_keyed(8, messages=40, error_rate=0, duplicate_rate=0,
                                                verify_rate=0, seed=3,
                                                start_ms=int(time.time() * 1000)):
                produced[envelope["source"]] += 1
                yield vin, envelope
                if burst.is_set() and envelope["source"] == FAILING_SOURCE:
                    produced[FAILING_SOURCE] += 1
                    yield vin, dict(envelope, payload="{not json " + uuid.uuid4().hex)
            stop.wait(1.0)

    producer = threading.Thread(target=produce_envelopes, daemon=True, args=(
        kafka_service.bootstrap, traffic(), 40.0), kwargs={"topic_of_source": raw_topics})
    producer.start()
    try:
        time.sleep(30)                      # normal traffic first: nothing fires
        assert _slack_messages(slack) == []
        burst.set()
        started = time.monotonic()
        firing, fired_at = _wait_for_message(slack, "FIRING", timeout_s=240)
        burst.clear()
        ended = time.monotonic()
        resolved, resolved_at = _wait_for_message(slack, "RESOLVED", timeout_s=300)
    finally:
        stop.set()
        producer.join(timeout=30)
    try:
        _assert_prometheus_counts_what_happened(alerting.url, produced, tmp_path / "fleet",
                                                raw_topics.values())
        _assert_status_shows_the_job(alerting.url, flink_cluster.flink_rest, raw_topics.values())
    finally:
        exporter.shutdown()
        collector.close()
    attachment = firing["attachments"][0]
    assert "FleetStreamSourceFailing" in attachment["title"]
    assert FAILING_SOURCE in attachment["title"]
    assert f"Source {FAILING_SOURCE}:" in attachment["text"] and "%" in attachment["text"]
    assert "FleetStreamSourceFailing" in resolved["attachments"][0]["title"]
    print(f"\nburst to Slack: {fired_at - started:.0f} s; end of burst to resolved: "
          f"{resolved_at - ended:.0f} s")



def _serve_exporter(settings: StreamSettings) -> tuple[Any, FleetCollector]:
    collector = FleetCollector(settings, refresh_s=2.0)
    registry = CollectorRegistry()
    registry.register(collector)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    return server, collector


def _query(prometheus: str, promql: str) -> dict[tuple, float]:
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?"
                                f"{urllib.parse.urlencode({'query': promql})}") as reply:
        result = orjson.loads(reply.read())["data"]["result"]
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in result}


def _assert_prometheus_counts_what_happened(prometheus: str, produced: Counter[str], out: Path,
                                            topics) -> None:
    """§9's names count what really happened: reads = records produced, deliveries =
    documents in the sink, one latency observation per document, lag per raw topic."""
    deadline = time.monotonic() + 90
    while True:
        delivered = sum(1 for path in out.glob("*.jsonl") for _ in open(path, "rb"))
        expected = {
            **{f'fleetstream_messages_total{{source="{s}",outcome="read"}}': float(n)
               for s, n in produced.items()},
            'fleetstream_documents_delivered_total{application="fleet",sink="file"}':
                float(delivered),
            'fleetstream_delivery_latency_seconds_count{application="fleet"}': float(delivered),
            'fleetstream_delivery_latency_seconds_bucket{application="fleet",le="+Inf"}':
                float(delivered),
        }
        seen = {promql: sum(_query(prometheus, promql).values()) for promql in expected}
        lag_topics = {dict(labels)["topic"] for labels in
                      _query(prometheus, "fleetstream_consumer_lag_records")}
        if seen == expected and delivered and lag_topics >= set(topics):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus has {seen} (lag topics {lag_topics}), "
                                 f"expected {expected}")
        time.sleep(2)


def _assert_status_shows_the_job(prometheus: str, flink_rest: str, topics) -> None:
    """`fleetstream status`, as an operator runs it, over these rules and this job: the
    running job, every source, the application and each raw topic's lag are on screen."""
    done = subprocess.run([sys.executable, "-m", "fleetstream.pipelines.cli", "status",
                           "--prometheus", prometheus, "--flink", flink_rest],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RUNNING" in done.stdout
    for name in (*SOURCES, "fleet", *topics):
        assert name in done.stdout, f"{name} missing from:\n{done.stdout}"
