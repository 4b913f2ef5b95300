"""`fleetstream status`: the view of a fake Prometheus and Flink, its exit codes and help, and
one run against a real Prometheus that scrapes metrics of known values."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from rich.console import Console

from fleetstream.operations.flink import FlinkClient
from fleetstream.operations.prometheus import PrometheusClient
from fleetstream.operations.queries import QUERIES
from fleetstream.operations.status import render, run_status, take_snapshot
from fleetstream.pipelines.cli import main
from tests.operations_harness import free_port, operations_prometheus  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]

JOBS = {"jobs": [
    {"jid": "a" * 32, "name": "fleetstream-stream", "state": "RUNNING",
     "start-time": 1_700_000_000_000, "duration": 3_723_000},
    {"jid": "b" * 32, "name": "fleetstream-stream", "state": "CANCELED",
     "start-time": 1_600_000_000_000, "duration": 10_000}]}


def vector(*samples: tuple[dict[str, str], str]) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1_700_000_000.0, value]} for labels, value in samples]}}


#: what the fake Prometheus answers to each named query
ANSWERS = {
    "source_outcomes": vector(({"source": "tesla", "outcome": "read"}, "10"),
                              ({"source": "tesla", "outcome": "ok"}, "7.5"),
                              ({"source": "tesla", "outcome": "failed"}, "2.5")),
    "source_throughput": vector(({"source": "tesla"}, "10")),
    "source_failure_share": vector(({"source": "tesla"}, "0.25")),
    "application_delivered": vector(({"application": "fleet"}, "1234.5")),
    "application_retries": vector(({"application": "fleet"}, "0.5")),
    "dead_letters": vector(({"source": "tesla", "stage": "map"}, "2"),
                           ({"source": "tesla", "stage": "deliver"}, "0.5")),
    "consumer_lag": vector(({"topic": "fleetstream.raw.tesla"}, "98765")),
    "consumer_lag_seconds": vector(({"topic": "fleetstream.raw.tesla"}, "3723")),
    "latency_p50": vector(({"application": "fleet"}, "0.042")),
    "latency_p99": vector(({"application": "fleet"}, "NaN")),
    "ingest_requests": vector(({"source": "tesla", "code": "503"}, "0.25")),
}
ALERTS = {"status": "success", "data": {"alerts": [{
    "labels": {"alertname": "FleetStreamDeliveryRetries", "severity": "critical"},
    "annotations": {"summary": "fleet retries its sink"}, "state": "firing",
    "activeAt": "2026-12-06T10:00:00Z", "value": "0.5"}]}}


@pytest.fixture
def fake_servers(httpserver: HTTPServer) -> str:
    for name, answer in ANSWERS.items():
        httpserver.expect_request("/api/v1/query", query_string={"query": QUERIES[name].promql}
                                  ).respond_with_json(answer)
    httpserver.expect_request("/api/v1/alerts").respond_with_json(ALERTS)
    httpserver.expect_request("/jobs/overview").respond_with_json(JOBS)
    return httpserver.url_for("").rstrip("/")


def text_of(renderable: object) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


def row(text: str, first: str) -> list[str]:
    """The cells of the table row that starts with `first`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"\s{2,}|│|┃", line.strip()) if cell.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


def test_the_view_shows_jobs_rates_shares_latency_lag_and_alerts(fake_servers: str) -> None:
    snapshot = take_snapshot(PrometheusClient(fake_servers), FlinkClient(fake_servers))
    assert snapshot.reachable and not snapshot.query_errors
    text = text_of(render(snapshot))
    assert row(text, "fleetstream-stream")[1:3] == ["RUNNING", "1h 2m"]
    assert "CANCELED" in text
    # source: read ok partial failed ignored | share | dead letters (map + deliver)
    assert row(text, "tesla")[1:] == ["10.0", "7.50", "–", "2.50", "–", "25.0%", "2.50"]
    assert row(text, "fleet")[1:] == ["1,234", "0.50", "42 ms", "–"]
    assert row(text, "fleetstream.raw.tesla")[1:] == ["98,765", "1h 2m"]
    assert row(text, "FleetStreamDeliveryRetries")[1:3] == ["firing", "critical"]
    assert "fleet retries its sink" in text


def test_a_query_prometheus_refuses_is_named_and_the_rest_shown(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v1/query", query_string={
        "query": QUERIES["consumer_lag"].promql}).respond_with_json(
        {"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400)
    httpserver.expect_request("/api/v1/query").respond_with_json(vector())
    httpserver.expect_request("/api/v1/alerts").respond_with_json({"status": "success",
                                                                   "data": {"alerts": []}})
    snapshot = take_snapshot(PrometheusClient(httpserver.url_for("")), None)
    text = text_of(render(snapshot))
    assert "query consumer_lag: Prometheus refused the query: bad_data: parse error" in text
    assert "No alerts firing." in text and "(no source reports)" in text


def test_unreachable_servers_are_said_in_the_view_and_exit_1(capsys) -> None:
    port = free_port()   # nothing listens there
    code = main(["status", "--prometheus", f"http://127.0.0.1:{port}",
                 "--flink", f"http://127.0.0.1:{port}/"])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"Prometheus at http://127.0.0.1:{port} is unreachable: connection failed" in out
    assert f"Flink at http://127.0.0.1:{port} is unreachable" in out
    assert "Traceback" not in out + err


def test_prometheus_reachable_but_flink_not_exits_1(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v1/query").respond_with_json(vector())
    httpserver.expect_request("/api/v1/alerts").respond_with_json({"status": "success",
                                                                   "data": {"alerts": []}})
    console = Console(record=True, width=160, color_system=None)
    code = run_status(httpserver.url_for(""), f"http://127.0.0.1:{free_port()}", None, console)
    text = console.export_text()
    assert code == 1
    assert "Flink at" in text and "is unreachable" in text and "No alerts firing." in text


def test_a_server_that_hangs_is_unreachable_after_the_timeout(httpserver: HTTPServer) -> None:
    import time

    def slow(_request):
        time.sleep(2.5)
    httpserver.expect_request("/api/v1/query").respond_with_handler(slow)
    console = Console(record=True, width=160, color_system=None)
    started = time.monotonic()
    code = run_status(httpserver.url_for(""), None, None, console, timeout_s=1.0)
    assert code == 1 and time.monotonic() - started < 2.4
    assert "is unreachable: no answer within the timeout" in console.export_text()


def test_help_teaches_the_views_and_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    text = capsys.readouterr().out
    for words in ("--watch [SECONDS]", "--prometheus URL", "--flink URL", "exits 1",
                  "failed and partial", "p50 and p99", "fleetstream status --watch"):
        assert words in text, words


def test_status_of_a_real_prometheus_shows_the_known_numbers(
        operations_prometheus, httpserver: HTTPServer) -> None:  # noqa: F811 (fixture)
    """`fleetstream status` as a user runs it, against Prometheus 2.42 scraping KnownMetrics
    (tests/operations_harness.py): the exact values and the alert are shown, and each rate is
    the one Prometheus computes for the same query."""
    httpserver.expect_request("/jobs/overview").respond_with_json(JOBS)
    result = subprocess.run(
        [sys.executable, "-m", "fleetstream.pipelines.cli", "status", "--prometheus",
         operations_prometheus.url, "--flink", httpserver.url_for("")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"})
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    direct = {name: {tuple(item["metric"].get(label, "") for label in QUERIES[name].by):
                     float(item["value"][1])
                     for item in operations_prometheus.prometheus.query(QUERIES[name].promql)}
              for name in QUERIES}
    tesla = row(text, "tesla")
    # read ok partial failed ignored | failed+partial share | dead letters/s
    assert tesla[1:] == ["10.0", "8.00", "1.00", "1.00", "0", "20.0%", "1.00"]
    assert row(text, "bmw")[1:] == ["4.00", "4.00", "–", "–", "–", "0.0%", "–"]
    # delivered/s retries/s p50 p99 (the histogram's p50 and p99 are 0.1 s and 1 s)
    assert row(text, "fleet")[1:] == ["12.0", "–", "100 ms", "1.00 s"]
    assert row(text, "insurer")[1:] == ["3.00", "0.50", "–", "–"]
    assert row(text, "fleetstream.raw.tesla")[1:] == ["1,234", "1m 35s"]
    assert row(text, "fleetstream.raw.bmw")[1:] == ["56", "2.50 s"]
    assert "503" in text and "0.25" in text
    assert row(text, "FleetStreamConsumerLagHigh")[1:3] == ["firing", "warning"]
    assert "fleetstream.raw.tesla is 1234 records behind" in text
    assert row(text, "fleetstream-stream")[1] == "RUNNING"
    # and they are what Prometheus itself answers to the same queries
    direct = {name: {tuple(item["metric"].get(label, "") for label in QUERIES[name].by):
                     float(item["value"][1])
                     for item in operations_prometheus.prometheus.query(QUERIES[name].promql)}
              for name in QUERIES}
    assert direct["source_outcomes"][("tesla", "read")] == pytest.approx(10.0, rel=0.01)
    assert direct["application_delivered"][("fleet",)] == pytest.approx(12.0, rel=0.01)
    assert direct["source_failure_share"][("tesla",)] == pytest.approx(0.2, rel=0.001)
    assert direct["consumer_lag"][("fleetstream.raw.tesla",)] == 1234


def test_no_running_job_is_said_and_old_ended_jobs_are_counted_not_listed() -> None:
    from fleetstream.operations.flink import FlinkJob
    from fleetstream.operations.status import Snapshot
    ended = [FlinkJob(f"{i:032x}", f"job-{i}", "CANCELED", 1000 - i, 10) for i in range(5)]
    text = text_of(render(Snapshot("http://p", "http://f", 0.0, jobs=ended)))
    assert "No job runs on Flink at http://f." in text
    assert "job-2" in text and "job-3" not in text and "(and 2 older ended jobs)" in text


@pytest.mark.parametrize("value, text", [(9.99999, "10.0"), (9.994, "9.99"), (999.96, "1,000"),
                                         (0.0, "0"), (float("nan"), "–"), (1234.5, "1,234")])
def test_rates_are_shown_at_the_precision_of_their_rounded_value(value: float, text: str) -> None:
    from fleetstream.operations.status import per_s
    assert per_s(value) == text


@pytest.mark.parametrize("value, text", [(0.9999, "1.00 s"), (0.0424, "42 ms"),
                                         (float("inf"), "> top bucket"), (12.5, "12.50 s"),
                                         (59.999, "1m 0s"), (7322.0, "2h 2m")])
def test_durations_are_ms_below_one_second_and_minutes_past_one(value: float, text: str) -> None:
    from fleetstream.operations.status import seconds
    assert seconds(value) == text


def test_status_and_dashboard_import_no_beam() -> None:
    """The operator commands start in about a second: the command line imports Beam only
    for the pipeline commands (it takes 4-5 s here)."""
    url = f"http://127.0.0.1:{free_port()}"
    script = ("import sys; from fleetstream.pipelines.cli import main; "
              f"code = main(['status', '--prometheus', '{url}', '--flink', '{url}']); "
              "import fleetstream.operations.dashboard; "
              "sys.exit(3 if 'apache_beam' in sys.modules else code)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1, result.stdout + result.stderr   # 3: Beam was imported
