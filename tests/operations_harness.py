"""A real Prometheus scraping §9 metrics of known values, for the operator views' tests.

`KnownMetrics` serves every DATA-CONTRACTS §9 metric: counters that grow at the constant
rates below (so rates, shares and latency percentiles are known), gauges of fixed values.
`TestPrometheus` runs Debian's /usr/bin/prometheus (installed when missing) with a config
of its own on a free loopback port (never 9090, the shared one), scraping the exporter and
evaluating one alert rule every second. The `operations_prometheus` fixture gives a test
both; its Prometheus starts with the last HISTORY_S seconds of the same series already in
its database (written by promtool), so that every rate covers its whole window and equals
the known rate from the start, then scrapes the series on.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from fleetstream.dev.service import apt_install
from tests.helpers import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
#: seconds of history written before Prometheus starts: every rate window is full at once
HISTORY_S = 150.0
JOB = "fleetstream"

#: messages per second per (source, outcome): tesla has 1 failed + 1 partial in 10 read
MESSAGE_RATES = {("tesla", "read"): 10.0, ("tesla", "ok"): 8.0, ("tesla", "partial"): 1.0,
                 ("tesla", "failed"): 1.0, ("tesla", "ignored"): 0.0,
                 ("bmw", "read"): 4.0, ("bmw", "ok"): 4.0}
DELIVERED_RATES = {("fleet", "kafka"): 12.0, ("insurer", "webhook"): 3.0}
RETRY_RATES = {("insurer", "webhook"): 0.5}
DEAD_LETTER_RATES = {("tesla", "map"): 1.0}
INGEST_RATES = {("tesla", "202"): 10.0, ("tesla", "503"): 0.25}
LAG = {"fleetstream.raw.tesla": 1234.0, "fleetstream.raw.bmw": 56.0}
LAG_SECONDS = {"fleetstream.raw.tesla": 95.0, "fleetstream.raw.bmw": 2.5}
#: observations per second at or under each bucket bound: p50 = 0.1 s, p99 = 1.0 s exactly
LATENCY_BUCKETS = {"fleet": (("0.05", 0.0), ("0.1", 50.0), ("0.5", 90.0), ("1.0", 99.0),
                             ("2.5", 100.0), ("+Inf", 100.0))}
#: the counters look as if they had run this long already (no start-of-series effects)
RUNNING_FOR_S = 3600.0

ALERT_RULES = {"groups": [{"name": "fleetstream-test", "interval": "1s", "rules": [{
    "alert": "FleetStreamConsumerLagHigh",
    "expr": "fleetstream_consumer_lag_records > 1000",
    "labels": {"severity": "warning"},
    "annotations": {"summary": "{{ $labels.topic }} is {{ $value }} records behind"}}]}]}


class KnownMetrics:
    """A prometheus_client collector of the §9 metrics with known rates and values."""

    def __init__(self) -> None:
        self.started = time.time() - RUNNING_FOR_S

    def collect(self) -> Iterator[object]:
        # stamped with the time they are computed at, so that a scrape that starts late on
        # a busy machine does not bend the rates
        return iter(self.families(time.time(), stamped=True))

    def families(self, at: float, stamped: bool = False) -> list[object]:
        """The metric families as they are at unix time `at`."""
        elapsed = at - self.started
        stamp = at if stamped else None

        def counter(name: str, help_: str, labels: list[str],
                    rates: dict[tuple[str, ...], float]) -> CounterMetricFamily:
            family = CounterMetricFamily(name, help_, labels=labels)
            for values, rate in rates.items():
                family.add_metric(list(values), rate * elapsed, timestamp=stamp)
            return family

        lag = GaugeMetricFamily("fleetstream_consumer_lag_records",
                                "records behind the newest offset", labels=["topic"])
        for topic, value in LAG.items():
            lag.add_metric([topic], value, timestamp=stamp)
        behind = GaugeMetricFamily("fleetstream_consumer_lag_seconds",
                                   "age of the oldest record not yet committed", labels=["topic"])
        for topic, value in LAG_SECONDS.items():
            behind.add_metric([topic], value, timestamp=stamp)
        latency = HistogramMetricFamily("fleetstream_delivery_latency_seconds",
                                        "receive time to sink acknowledgement",
                                        labels=["application"])
        for app, buckets in LATENCY_BUCKETS.items():
            latency.add_metric([app], [(bound, rate * elapsed) for bound, rate in buckets],
                               sum_value=30.0 * elapsed, timestamp=stamp)
        return [
            counter("fleetstream_messages", "mapping outcomes", ["source", "outcome"],
                    MESSAGE_RATES),
            counter("fleetstream_documents_delivered", "documents a sink acknowledged",
                    ["application", "sink"], DELIVERED_RATES),
            counter("fleetstream_delivery_retries", "failed writes that were retried",
                    ["application", "sink"], RETRY_RATES),
            counter("fleetstream_dead_letters", "dead letters written", ["source", "stage"],
                    DEAD_LETTER_RATES),
            counter("fleetstream_ingest_requests", "push requests answered",
                    ["source", "code"], INGEST_RATES),
            lag, behind, latency]

    def history(self, start: float, end: float, target: str, step: float = 1.0) -> str:
        """OpenMetrics text of every series every `step` seconds in [start, end), for
        `promtool tsdb create-blocks-from openmetrics`: the past a fresh Prometheus lacks,
        labelled as its scrapes of `target` will be so that each series goes on."""
        scraped = {"job": JOB, "instance": target}
        times = [start + i * step for i in range(int((end - start) / step))]
        by_series: dict[tuple[str, str], list[str]] = {}
        types: dict[str, str] = {}
        for at in times:
            for family in self.families(at):
                types[family.name] = family.type
                for sample in family.samples:
                    labels = ",".join(f'{k}="{v}"' for k, v in
                                      sorted({**sample.labels, **scraped}.items()))
                    by_series.setdefault((family.name, f"{sample.name}{{{labels}}}"), []).append(
                        f"{sample.name}{{{labels}}} {sample.value!r} {at:.3f}")
        lines = []
        for name, kind in types.items():
            lines.append(f"# TYPE {name} {kind}")
            for (family_name, _series), points in by_series.items():
                if family_name == name:
                    lines.extend(points)
        return "\n".join(lines) + "\n# EOF\n"

@dataclass
class TestPrometheus:
    """A Prometheus of a test's own: `url`, `query()` to ask it directly, `stop()`."""

    __test__ = False   # not a test class, whatever pytest thinks of the name

    url: str
    process: subprocess.Popen
    log: Path

    def query(self, promql: str) -> list[dict]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(folder: Path, target: str, history: str = "") -> TestPrometheus:
    """Prometheus on a free loopback port scraping `target` (HOST:PORT) every second, its
    database first filled with `history` (OpenMetrics text) when given."""
    if not PROMETHEUS.exists():
        apt_install("prometheus", "prometheus")
    port = free_port()
    if history:
        (folder / "history.om").write_text(history)
        subprocess.run([str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics",
                        str(folder / "history.om"), str(folder / "data")],
                       check=True, capture_output=True, timeout=120)
    (folder / "rules.yml").write_text(yaml.safe_dump(ALERT_RULES))
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yml")],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }))
    log = folder / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--storage.tsdb.retention.time=1h"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder)
    prometheus = TestPrometheus(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                return prometheus
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    prometheus.stop()
    raise AssertionError(f"prometheus not ready in 60 s: {log.read_text()[-3000:]}")


@dataclass
class OperationsPrometheus:
    prometheus: TestPrometheus
    exporter: str

    @property
    def url(self) -> str:
        return self.prometheus.url


@pytest.fixture
def operations_prometheus(tmp_path: Path) -> Iterator[OperationsPrometheus]:
    """A real Prometheus that scrapes `KnownMetrics`, once rates and the alert are there."""
    metrics = KnownMetrics()
    registry = CollectorRegistry()
    registry.register(metrics)
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    now = time.time()
    prometheus = start_prometheus(tmp_path, f"127.0.0.1:{port}",
                                  metrics.history(now - HISTORY_S, now, f"127.0.0.1:{port}"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # the history makes the rates and the alert at once, but the first scrape comes
            # ~5 s after the start (Prometheus' target discovery): until two have been taken
            # the newest sample is the history's last one and the rates sag as it ages
            if (prometheus.query(f'count_over_time(up{{job="{JOB}"}}[30s]) >= 2') and
                    prometheus.query('ALERTS{alertstate="firing"}')):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no scrapes after 60 s: {prometheus.log.read_text()[-3000:]}")
        yield OperationsPrometheus(prometheus, f"127.0.0.1:{port}")
    finally:
        prometheus.stop()
        server.shutdown()
        server.server_close()
