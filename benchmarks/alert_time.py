"""How long a failing source takes to reach Slack at the shipped alert settings.

    fleetstream dev up            # installs Prometheus and Alertmanager if missing
    python benchmarks/alert_time.py [--history-s 300] [--burst-s 240] [--write docs/benchmarks.md]

A Prometheus and an Alertmanager of the benchmark's own (free loopback ports, the
shipped `Thresholds()`, 10 s scrapes and evaluations, Alertmanager's 30 s group_wait
and 5 min group_interval: what `fleetstream dev up` runs), a stand-in for Slack's
incoming webhook, and a stand-in for Flink's Prometheus reporter serving the job's
counters under the names the reporter gives them (so the shipped relabelling and
recording rules make §9's series of them). Normal traffic (40 messages/s, none
failing) fills the failure window first; then a burst adds 20 malformed messages/s
for `--burst-s` seconds (a third of the source's messages fail), then stops. Measured:
burst start -> FIRING message, burst end -> RESOLVED message.
"""
from __future__ import annotations

import argparse
import http.server
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import orjson
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from report import publish

from fleetstream.dev.alertmanager import AlertmanagerService
from fleetstream.dev.prometheus import PrometheusService
from fleetstream.dev.service import free_port
from fleetstream.monitoring.rules import Thresholds

#: Flink's reporter: a Beam counter `tesla.read` becomes this prefix + `tesla_read`
FLINK_PREFIX = "flink_taskmanager_job_task_operator_fleetstream_"
SOURCE = "tesla"
CLEAN_PER_S, MALFORMED_PER_S = 40.0, 20.0


class SourceCounters:
    """The job's `<source>.read` and `<source>.failed` counters as Flink's reporter shows them."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.burst: tuple[float, float | None] | None = None

    def burst_seconds(self, now: float) -> float:
        if self.burst is None:
            return 0.0
        start, end = self.burst
        return max(0.0, (end if end is not None else now) - start)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        malformed = MALFORMED_PER_S * self.burst_seconds(now)
        for outcome, value in (("read", CLEAN_PER_S * (now - self.started) + malformed),
                               ("ok", CLEAN_PER_S * (now - self.started)),
                               ("failed", malformed)):
            yield GaugeMetricFamily(f"{FLINK_PREFIX}{SOURCE}_{outcome}", "a Beam counter",
                                    value=int(value))


class SlackStandIn(http.server.ThreadingHTTPServer):
    """Records each incoming-webhook POST with the time it arrived."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.messages.append((time.monotonic(), orjson.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def wait_for(self, status: str, timeout_s: float) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, message in self.messages:
                if any(status in a.get("title", "") for a in message.get("attachments", [])):
                    return at, message
            time.sleep(0.5)
        raise SystemExit(f"no {status} message within {timeout_s:.0f} s; got {self.messages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history-s", type=float, default=300.0,
                        help="seconds of clean traffic before the burst (default 300: the "
                             "shipped 5 min failure window full)")
    parser.add_argument("--burst-s", type=float, default=240.0,
                        help="seconds the burst lasts (default 240)")
    parser.add_argument("--write", help="append the results as Markdown to this file")
    args = parser.parse_args()

    thresholds = Thresholds()
    counters = SourceCounters()
    registry = CollectorRegistry()
    registry.register(counters)
    reporter, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    slack = SlackStandIn()
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    home = Path(tempfile.mkdtemp(prefix="alert-time-"))
    alertmanager = AlertmanagerService(free_port(), name="alertmanager-alert-time",
                                       slack_url=f"http://127.0.0.1:{slack.server_port}/")
    prometheus = PrometheusService(free_port(), name="prometheus-alert-time",
                                   alertmanager=f"127.0.0.1:{alertmanager.port}",
                                   flink_targets=[f"127.0.0.1:{reporter.server_port}"],
                                   thresholds=thresholds)
    alertmanager.root = prometheus.root = home
    alertmanager.start()
    try:
        prometheus.start()
        try:
            print(f"clean traffic for {args.history_s:.0f} s ...", flush=True)
            time.sleep(args.history_s)
            started = time.monotonic()
            counters.burst = (started, None)
            print(f"burst: {MALFORMED_PER_S:g} malformed/s beside {CLEAN_PER_S:g} clean/s",
                  flush=True)
            fired_at, firing = slack.wait_for("FIRING", timeout_s=args.burst_s)
            time.sleep(max(0.0, started + args.burst_s - time.monotonic()))
            ended = time.monotonic()
            counters.burst = (started, ended)
            print("burst over", flush=True)
            resolved_at, _ = slack.wait_for("RESOLVED", timeout_s=1200)
        finally:
            prometheus.stop()
    finally:
        alertmanager.stop()
        slack.shutdown()
        reporter.shutdown()

    title = firing["attachments"][0]["title"]
    lines = [
        "## Alerts: a failing source to Slack at the shipped settings", "",
        f"`python benchmarks/alert_time.py --history-s {args.history_s:g} --burst-s "
        f"{args.burst_s:g}`: the shipped thresholds (failure share > "
        f"{thresholds.failure_share:.0%} over {thresholds.failure_window}, for "
        f"{thresholds.for_duration}), 10 s scrapes and evaluations, Alertmanager's 30 s "
        "group_wait and 5 min group_interval; a stand-in for Flink's reporter serving "
        f"`{SOURCE}` counters ({CLEAN_PER_S:g} clean messages/s, then "
        f"{MALFORMED_PER_S:g} malformed/s more for {args.burst_s:g} s: a third failing) "
        "and a stand-in for Slack.", "",
        "| from | to | seconds |", "|---|---|---:|",
        f"| burst start | `{title}` | {fired_at - started:.0f} |",
        f"| burst end | RESOLVED | {resolved_at - ended:.0f} |", ""]
    publish(lines, args.write)


if __name__ == "__main__":
    sys.exit(main())
