"""`fleetstream dashboard`: its API against a fake Prometheus (named queries only, ranges,
unreachable), its page and files, and the page in headless Chromium against a real
Prometheus: no console errors, the figures are Prometheus' numbers, and a Prometheus that
stops is said on the page."""
from __future__ import annotations

import ast
import asyncio
import fnmatch
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pytest_httpserver import HTTPServer

from fleetstream.dev.chromium import console_errors
from fleetstream.operations.dashboard import (MAX_RANGE_S, MIN_RANGE_S, PANELS, POINTS, STATIC,
                                              make_app, parse_listen, range_and_step)
from fleetstream.operations.queries import QUERIES
from tests.operations_harness import free_port, operations_prometheus  # noqa: F401 (fixture)

pytest_plugins = ["fleetstream.dev.browser_pytest_plugin"]

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"jobs": [
    {"jid": "a" * 32, "name": "fleetstream-stream", "state": "RUNNING",
     "start-time": 1_700_000_000_000, "duration": 3_723_000},
    {"jid": "b" * 32, "name": "fleetstream-stream", "state": "FAILED",
     "start-time": 1_600_000_000_000, "duration": 10_000}]}
NOW = 1_799_999_999.0   # a multiple of 7: the 1680 s range's step


def call(prometheus_url: str, path: str,
         flink_url: str = "http://127.0.0.1:1") -> tuple[int, Any, dict[str, str]]:
    """GET `path` of the dashboard app asking `prometheus_url` and `flink_url`: status, JSON
    or text, headers."""
    async def go() -> tuple[int, Any, dict[str, str]]:
        async with TestClient(TestServer(make_app(prometheus_url, flink_url, clock=lambda: NOW,
                                                  timeout_s=2))) as client:
            response = await client.get(path)
            body = (await response.json() if response.content_type == "application/json"
                    else await response.text())
            return response.status, body, dict(response.headers)
    return asyncio.run(go())


def test_a_named_query_is_answered_over_the_range_with_its_value_now(
        httpserver: HTTPServer) -> None:
    lag = QUERIES["consumer_lag"].promql
    httpserver.expect_request("/api/v1/query_range", query_string={
        "query": lag, "start": f"{NOW - 7.0 * POINTS:.3f}", "end": f"{NOW:.3f}", "step": "7"}
    ).respond_with_json({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"topic": "raw.tesla"}, "values": [[NOW - 7, "10"], [NOW, "NaN"]]}]}})
    httpserver.expect_request("/api/v1/query", query_string={"query": lag}).respond_with_json(
        {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"topic": "raw.tesla"}, "value": [NOW, "12"]}]}})
    status, body, headers = call(httpserver.url_for(""), "/api/query/consumer_lag?range=1680")
    assert status == 200, body
    assert body["series"] == [{"name": "raw.tesla", "labels": {"topic": "raw.tesla"},
                               "points": [[NOW - 7, 10.0], [NOW, None]]}]
    assert body["now"] == [{"name": "raw.tesla", "labels": {"topic": "raw.tesla"}, "value": 12.0}]
    assert body["unit"] == "records" and headers["Cache-Control"] == "no-store"


def test_only_named_queries_are_proxied(httpserver: HTTPServer) -> None:
    status, body, _ = call(httpserver.url_for(""), "/api/query/up")
    assert status == 404 and "no query named 'up'" in body
    status, _, _ = call(httpserver.url_for(""), "/api/query?query=up")
    assert status == 404
    assert not httpserver.log, "nothing reached Prometheus"


def test_unreachable_prometheus_is_a_502_that_names_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for path in ("/api/query/source_throughput", "/api/alerts"):
        status, body, _ = call(url, path)
        assert status == 502
        assert body["error"].startswith(f"Prometheus at {url} is unreachable: ")


def test_alerts_and_panels(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/v1/alerts").respond_with_json({"status": "success", "data": {
        "alerts": [{"labels": {"alertname": "B", "severity": "info"}, "state": "pending",
                    "annotations": {}, "activeAt": "2026-12-06T10:00:00Z"},
                   {"labels": {"alertname": "A"}, "state": "firing",
                    "annotations": {"summary": "lag"}, "activeAt": "2026-12-06T09:00:00Z"}]}})
    status, body, _ = call(httpserver.url_for(""), "/api/alerts")
    assert status == 200
    assert [(a["name"], a["state"], a["summary"]) for a in body["alerts"]] == [
        ("A", "firing", "lag"), ("B", "pending", "")]
    _, panels, _ = call(httpserver.url_for(""), "/api/panels")
    assert [p["id"] for p in panels["panels"]] == [p.id for p in PANELS]
    assert set(panels["queries"]) == set(QUERIES)


def test_flink_jobs_and_an_unreachable_flink(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/jobs/overview").respond_with_json(JOBS)
    status, body, _ = call("http://127.0.0.1:1", "/api/jobs", httpserver.url_for(""))
    assert status == 200
    assert [(j["state"], j["live"], j["trouble"]) for j in body["jobs"]] == [
        ("RUNNING", True, False), ("FAILED", False, True)]
    url = f"http://127.0.0.1:{free_port()}"
    status, body, _ = call("http://127.0.0.1:1", "/api/jobs", url)
    assert status == 502 and body["error"].startswith(f"Flink at {url} is unreachable: ")


def test_the_range_is_clamped_and_the_steps_shared() -> None:
    assert range_and_step("1800", 1000.5) == (1000 - 8 * POINTS, 1000, 8.0)
    start, end, step = range_and_step("1", NOW)
    assert end - start == pytest.approx(MIN_RANGE_S, abs=POINTS) and step == 1
    start, end, step = range_and_step("1e12", NOW)
    assert end - start == pytest.approx(MAX_RANGE_S, rel=0.01)
    assert range_and_step("nan", NOW) == range_and_step(None, NOW) == range_and_step("x", NOW)


def test_the_page_and_its_files_are_served_with_a_self_only_policy() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status, page, headers = call(url, "/")
    assert status == 200 and "FleetStream dashboard" in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "http" not in page.replace('meta name="viewport"', ""), "the page loads only its own"
    status, script, _ = call(url, "/static/vendor/uplot/uPlot.iife.min.js")
    assert status == 200 and script.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32)")
    assert call(url, "/static/../dashboard.py")[0] == 404


def test_every_static_file_is_package_data() -> None:
    """setup.py's package_data takes every file the dashboard serves, so an installed
    (non-editable) FleetStream has them."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    patterns = next(ast.literal_eval(k.value) for node in ast.walk(tree)
                    if isinstance(node, ast.Call) for k in node.keywords
                    if k.arg == "package_data")["fleetstream"]
    package = ROOT / "fleetstream"
    for file in STATIC.rglob("*"):
        if file.is_file():
            relative = file.relative_to(package).as_posix()
            assert any(fnmatch.fnmatch(relative, pattern) and
                       relative.count("/") == pattern.count("/") for pattern in patterns), relative
    assert (STATIC / "vendor" / "uplot" / "LICENSE").exists()


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "host:99999", "host:x"])
def test_listen_must_be_host_and_port(text: str) -> None:
    with pytest.raises(ValueError, match="--listen: expected HOST:PORT"):
        parse_listen(text)


def test_listen_takes_ipv6() -> None:
    assert parse_listen("[::1]:8092") == ("::1", 8092)


# --- the page in a real browser against a real Prometheus ---------------------------
@pytest.fixture
def dashboard(operations_prometheus, httpserver: HTTPServer,  # noqa: F811 (fixture)
              tmp_path: Path) -> Iterator[str]:
    """`fleetstream dashboard` as a user starts it, on a free port, with a fake Flink
    listing JOBS; its URL."""
    httpserver.expect_request("/jobs/overview").respond_with_json(JOBS)
    port = free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleetstream.pipelines.cli", "dashboard", "--listen",
             f"127.0.0.1:{port}", "--prometheus", operations_prometheus.url,
             "--flink", httpserver.url_for("")],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/api/panels", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


#: what the page shows, read in one go (the page redraws its tables at every refresh)
PAGE_STATE = """
const texts = (selector, key) => Object.fromEntries(
  [...document.querySelectorAll(selector)].map((node) => [node.dataset[key], node.innerText]));
return {
  values: [...document.querySelectorAll("td[data-query]")].map(
    (cell) => [cell.dataset.query, cell.dataset.series, cell.dataset.value]),
  canvases: Object.fromEntries([...document.querySelectorAll(".panel")].map(
    (panel) => [panel.dataset.panel, panel.querySelectorAll(".chart canvas").length])),
  panels: texts(".panel", "panel"),
  alerts: texts("[data-alert]", "alert"),
  jobs: texts("[data-job]", "job"),
};
"""


def wait_for(driver: Any, condition: str, timeout_s: float = 30.0) -> None:
    """Until the JavaScript expression `condition` is true in the page."""
    deadline = time.monotonic() + timeout_s
    while not driver.execute_script(f"return Boolean({condition});"):
        if time.monotonic() > deadline:
            raise AssertionError(f"page never got {condition}; body: "
                                 f"{driver.find_element('tag name', 'body').text[:2000]}")
        time.sleep(0.2)


def test_the_page_shows_what_prometheus_has_and_says_when_it_stops(  # noqa: F811 (fixture)
        dashboard: str, operations_prometheus, chromium_driver, tmp_path: Path) -> None:
    driver = chromium_driver
    driver.get(f"{dashboard}/?refresh=2")
    wait_for(driver, 'document.body.dataset.state === "ok"')
    driver.save_screenshot(str(tmp_path / "dashboard.png"))
    assert console_errors(driver) == []

    page = driver.execute_script(PAGE_STATE)   # at one moment: the page redraws every 2 s

    # every panel drew a chart
    for panel in PANELS:
        assert page["canvases"].get(panel.id), panel.id

    # the figures beside the charts are the numbers Prometheus has
    shown = {(query, series): float(value) if value else None
             for query, series, value in page["values"]}
    direct: dict[tuple[str, str], float] = {}
    for name in {name for panel in PANELS for name in panel.queries}:
        for item in operations_prometheus.prometheus.query(QUERIES[name].promql):
            direct[(name, QUERIES[name].series_name(item["metric"]))] = float(item["value"][1])
    assert set(shown) == set(direct)
    for key, value in direct.items():
        if math.isnan(value):
            assert shown[key] is None, key
        else:
            assert shown[key] == pytest.approx(value, rel=0.01), key
    # ... which are the known ones
    assert shown[("consumer_lag", "fleetstream.raw.tesla")] == 1234
    assert shown[("source_failure_share", "tesla")] == pytest.approx(0.2)
    assert shown[("latency_p99", "fleet")] == pytest.approx(1.0)
    assert shown[("source_throughput", "tesla")] == pytest.approx(10.0, rel=0.01)
    assert "1,234" in page["panels"]["lag"] and "fleetstream.raw.bmw" in page["panels"]["lag"]
    assert "100 ms" in page["panels"]["latency"] and "10.0/s" in page["panels"]["throughput"]
    assert "1m 35s" in page["panels"]["lag_seconds"]
    alert = page["alerts"]["FleetStreamConsumerLagHigh"]
    assert "firing" in alert and "1234 records behind" in alert
    assert "RUNNING" in page["jobs"]["a" * 32] and "1h 2m" in page["jobs"]["a" * 32]
    assert "FAILED" in page["jobs"]["b" * 32]

    # Prometheus stops: the next refresh says so instead of charts
    operations_prometheus.prometheus.stop()
    wait_for(driver, 'document.body.dataset.state === "unreachable"')
    problem = driver.find_element("id", "problem")
    assert problem.is_displayed()
    assert f"Prometheus at {operations_prometheus.url} is unreachable" in problem.text
    assert not driver.find_element("id", "panels").is_displayed()
    assert "RUNNING" in driver.find_element("id", "jobs").text   # Flink still answers
    driver.save_screenshot(str(tmp_path / "dashboard-unreachable.png"))
    print(f"screenshots in {tmp_path}")


def test_a_taken_or_malformed_address_is_said_without_a_traceback(capsys) -> None:
    import socket

    from fleetstream.pipelines.cli import main
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        assert main(["dashboard", "--listen", address]) == 2
    assert f"cannot listen on {address}: " in capsys.readouterr().err
    assert main(["dashboard", "--listen", "8092"]) == 2
    assert "--listen: expected HOST:PORT" in capsys.readouterr().err
