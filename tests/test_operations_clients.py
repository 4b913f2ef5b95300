"""The operator views' clients of Prometheus and Flink against fake servers, the named
queries, and `fleetstream status --watch`."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from rich.console import Console
from werkzeug import Request, Response

from fleetstream.operations import status as status_module
from fleetstream.operations.flink import FlinkClient
from fleetstream.operations.prometheus import PrometheusClient, QueryError, Unreachable
from fleetstream.operations.queries import QUERIES
from tests.operations_harness import free_port

#: DATA-CONTRACTS §9
METRICS = {"fleetstream_ingest_requests_total", "fleetstream_ingest_records_total",
           "fleetstream_messages_total", "fleetstream_documents_delivered_total",
           "fleetstream_delivery_retries_total", "fleetstream_dead_letters_total",
           "fleetstream_delivery_latency_seconds_bucket", "fleetstream_consumer_lag_records",
           # and `fleetstream exporter`'s lag in time (docs/operations.md)
           "fleetstream_consumer_lag_seconds"}


def test_instant_and_range_answers_become_samples_and_series(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v1/query", query_string={"query": "q"}).respond_with_json(
        {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"a": "1"}, "value": [1.0, "2.5"]},
            {"metric": {"a": "2"}, "value": [1.0, "NaN"]},
            {"metric": {"a": "3"}, "value": [1.0, "+Inf"]}]}})
    httpserver.expect_request("/api/v1/query", query_string={"query": "s"}).respond_with_json(
        {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}})
    httpserver.expect_request("/api/v1/query_range", query_string={
        "query": "q", "start": "10.000", "end": "20.000", "step": "5"}).respond_with_json(
        {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"a": "1"}, "values": [[10, "1"], [15, "2"], [20, "3"]]}]}})
    prometheus = PrometheusClient(httpserver.url_for("/"))
    samples = prometheus.query("q")
    assert [(s.labels, s.value) for s in samples[:1]] == [({"a": "1"}, 2.5)]
    assert math.isnan(samples[1].value) and samples[2].value == math.inf
    assert [s.value for s in prometheus.query("s")] == [7.0]
    [series] = prometheus.query_range("q", 10, 20, 5)
    assert series.labels == {"a": "1"} and series.points == ((10, 1), (15, 2), (20, 3))


def test_a_refused_query_is_a_query_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v1/query").respond_with_json(
        {"status": "error", "errorType": "bad_data", "error": "1:1: parse error"}, status=400)
    with pytest.raises(QueryError, match="bad_data: 1:1: parse error"):
        PrometheusClient(httpserver.url_for("")).query("(")


@pytest.mark.parametrize("answer", ["<html>proxy error</html>", '{"not": "prometheus"}'])
def test_something_else_answering_is_unreachable(httpserver: HTTPServer, answer: str) -> None:
    httpserver.expect_request("/api/v1/alerts").respond_with_data(answer, status=502)
    url = httpserver.url_for("").rstrip("/")
    with pytest.raises(Unreachable, match=re.escape(f"Prometheus at {url} is unreachable: "
                                                    "HTTP 502, not a Prometheus API answer")):
        PrometheusClient(url).alerts()


def test_nothing_listening_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=re.escape(f"Prometheus at {url} is unreachable: "
                                                    "connection failed")):
        PrometheusClient(url).query("up")
    with pytest.raises(Unreachable, match=re.escape(f"Flink at {url} is unreachable")):
        FlinkClient(url).jobs()


def test_flink_jobs_live_first_then_newest(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/jobs/overview").respond_with_json({"jobs": [
        {"jid": "old", "name": "n", "state": "FINISHED", "start-time": 1, "duration": 5},
        {"jid": "new", "name": "n", "state": "FAILED", "start-time": 3, "duration": 5},
        {"jid": "live", "name": "n", "state": "RESTARTING", "start-time": 2, "duration": 7000}]})
    jobs = FlinkClient(httpserver.url_for("")).jobs()
    assert [(job.id, job.live) for job in jobs] == [("live", True), ("new", False),
                                                     ("old", False)]
    assert jobs[0].running_for_s == 7.0


def test_flink_answering_something_else_is_unreachable(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/jobs/overview").respond_with_data("not found", status=404)
    with pytest.raises(Unreachable, match="Flink at .* is unreachable: HTTP 404, not a Flink"):
        FlinkClient(httpserver.url_for("")).jobs()


def test_the_queries_read_only_the_documented_metrics_by_their_labels() -> None:
    for name, query in QUERIES.items():
        assert re.fullmatch(r"[a-z0-9_]+", name)
        metrics = set(re.findall(r"fleetstream_[a-z_]+", query.promql))
        assert metrics and metrics <= METRICS, (name, metrics)
        # every aggregation keeps the labels that name the series (latency's adds `le`)
        groups = re.findall(r"by \(([^)]*)\)", query.promql)
        assert groups and all(group.startswith(", ".join(query.by)) for group in groups), name


def test_watch_redraws_until_ctrl_c(httpserver: HTTPServer, monkeypatch) -> None:
    lags = iter(["5", "6", "7"])

    def lag(_request: Request) -> Response:
        return Response(json.dumps({"status": "success", "data": {
            "resultType": "vector", "result": [{"metric": {"topic": "raw"},
                                                "value": [1, next(lags)]}]}}),
            content_type="application/json")
    httpserver.expect_request("/api/v1/query", query_string={
        "query": QUERIES["consumer_lag"].promql}).respond_with_handler(lag)
    httpserver.expect_request("/api/v1/query").respond_with_json(
        {"status": "success", "data": {"resultType": "vector", "result": []}})
    httpserver.expect_request("/api/v1/alerts").respond_with_json(
        {"status": "success", "data": {"alerts": []}})
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(status_module.time, "sleep", sleep)
    console = Console(record=True, width=120, color_system=None, force_terminal=True)
    assert status_module.run_status(httpserver.url_for(""), None, 3.0, console) == 0
    assert sleeps == [3.0, 3.0]
    text = console.export_text()
    assert "No alerts firing." in text and re.search(r"raw\s+│\s+6", text)


def test_every_metric_the_views_read_is_recorded_or_exported_by_fleetstream() -> None:
    """The views read only names FleetStream's own monitoring gives Prometheus: the shipped
    recording rules (fleetstream/monitoring/fleetstream.rules.yml), `fleetstream exporter`
    and the ingest gateway's /metrics."""
    import yaml

    from fleetstream.ingest.metrics import IngestMetrics
    from fleetstream.monitoring import exporter
    package = Path(exporter.__file__).parent
    rules = yaml.safe_load((package / "fleetstream.rules.yml").read_text())
    given = {rule["record"] for group in rules["groups"] for rule in group["rules"]
             if "record" in rule}
    given |= set(re.findall(r'GaugeMetricFamily\("(fleetstream_[a-z_]+)"',
                            Path(exporter.__file__).read_text()))
    given |= {metric.name + "_total" for metric in IngestMetrics().registry.collect()
              if metric.type == "counter"}
    for query in QUERIES.values():
        for metric in re.findall(r"fleetstream_[a-z_]+", query.promql):
            assert metric in given, (query.name, metric)
