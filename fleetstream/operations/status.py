"""`fleetstream status`: what the running FleetStream does now, in the terminal.

One screen from one `Snapshot`: the Flink jobs and their states, per source the message
rates by outcome with the failed-and-partial share and the dead letters, per application the
documents delivered, the retries and the delivery latency p50/p99, the consumer lag per
topic, the ingest push requests per answer code, and the alerts Prometheus holds. The numbers
are the `queries.QUERIES` instant values (rates per second over the last minute).

    snapshot = take_snapshot(PrometheusClient(url), FlinkClient(flink_url))
    Console().print(render(snapshot))
    exit_code = 0 if snapshot.reachable else 1

A server that does not answer is said in the view ("Prometheus at URL is unreachable: ...")
and makes a one-shot run exit 1; `--watch` redraws every few seconds until Ctrl-C.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fleetstream.operations.flink import TROUBLE_STATES, FlinkClient, FlinkJob
from fleetstream.operations.prometheus import (Alert, PrometheusClient, QueryError, Sample,
                                               Unreachable)
from fleetstream.operations.queries import QUERIES, RATE_WINDOW

OUTCOMES = ("read", "ok", "partial", "failed", "ignored")


@dataclass
class Snapshot:
    """What the view shows, taken at one moment."""

    prometheus_url: str
    flink_url: str | None
    taken_at: float
    #: query name -> its samples
    values: dict[str, list[Sample]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    jobs: list[FlinkJob] = field(default_factory=list)
    prometheus_error: str | None = None
    flink_error: str | None = None
    #: query name -> why Prometheus refused it
    query_errors: dict[str, str] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        """Both servers answered."""
        return self.prometheus_error is None and self.flink_error is None

    def by_key(self, name: str) -> dict[tuple[str, ...], float]:
        """The query's values keyed by its `by` label values."""
        query = QUERIES[name]
        return {query.key(sample.labels): sample.value for sample in self.values.get(name, [])}


def take_snapshot(prometheus: PrometheusClient, flink: FlinkClient | None,
                  clock: Callable[[], float] = time.time) -> Snapshot:
    """Ask Prometheus every query and the alerts, and Flink its jobs. A server that does not
    answer is noted in the snapshot (its first failure ends the asking of it)."""
    snapshot = Snapshot(prometheus.url, flink.url if flink else None, clock())
    try:
        for name, query in QUERIES.items():
            try:
                snapshot.values[name] = prometheus.query(query.promql)
            except QueryError as error:
                snapshot.query_errors[name] = str(error)
        snapshot.alerts = prometheus.alerts()
    except Unreachable as error:
        snapshot.prometheus_error = str(error)
        snapshot.values.clear()
    if flink is not None:
        try:
            snapshot.jobs = flink.jobs()
        except Unreachable as error:
            snapshot.flink_error = str(error)
    return snapshot


# --- formatting ---------------------------------------------------------------------
DASH = "–"


def per_s(value: float | None) -> str:
    if value is None or math.isnan(value):
        return DASH
    if value == 0:
        return "0"
    # the precision of the value as rounded: 9.9999 is "10.0", not "10.00"
    if abs(value) < 9.995:
        return f"{value:.2f}"
    if abs(value) < 999.95:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def share(value: float | None) -> str:
    if value is None or math.isnan(value) or math.isinf(value):
        return DASH
    return f"{value * 100:.1f}%"


def seconds(value: float | None) -> str:
    if value is None or math.isnan(value):
        return DASH
    if math.isinf(value):
        return "> top bucket"
    if round(value * 1000) < 1000:
        return f"{value * 1000:.0f} ms"
    if round(value, 2) < 60:
        return f"{value:.2f} s"
    return duration(value)


def records(value: float | None) -> str:
    if value is None or math.isnan(value):
        return DASH
    return f"{value:,.0f}"


def duration(seconds_: float) -> str:
    seconds_ = round(max(seconds_, 0))
    days, rest = divmod(seconds_, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


# --- the view -----------------------------------------------------------------------
def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False,
                  pad_edge=False, show_edge=False)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right",
                         no_wrap=True)
    return table


#: ended jobs shown below the live ones (Flink lists them for an hour by default)
ENDED_JOBS_SHOWN = 3


def _jobs(snapshot: Snapshot) -> RenderableType:
    if snapshot.flink_url is None:
        return Text("")
    if snapshot.flink_error:
        return Text(snapshot.flink_error, style="bold red")
    live = [job for job in snapshot.jobs if job.live]
    ended = [job for job in snapshot.jobs if not job.live]
    table = _table("Flink jobs", "job", "state", "running for", "id")
    table.columns[1].justify = table.columns[3].justify = "left"
    for job in live + ended[:ENDED_JOBS_SHOWN]:
        style = ("red" if job.state in TROUBLE_STATES else
                 "green" if job.state == "RUNNING" else "yellow" if job.live else "dim")
        table.add_row(job.name, Text(job.state, style=style),
                      duration(job.running_for_s) if job.live else DASH, job.id)
    if len(ended) > ENDED_JOBS_SHOWN:
        table.add_row(Text(f"(and {len(ended) - ENDED_JOBS_SHOWN} older ended jobs)",
                           style="dim"), "", "", "")
    if not live:
        return Group(Text(f"No job runs on Flink at {snapshot.flink_url}.", style="bold yellow"),
                     *([table] if ended else []))
    return table


def _sources(snapshot: Snapshot) -> Table:
    outcomes = snapshot.by_key("source_outcomes")
    failure = snapshot.by_key("source_failure_share")
    dead: dict[str, float] = {}
    for (source, _stage), value in snapshot.by_key("dead_letters").items():
        dead[source] = dead.get(source, 0.0) + value
    sources = sorted({key[0] for key in outcomes} | {key[0] for key in failure} | set(dead))
    table = _table(f"Sources: messages/s over {RATE_WINDOW}", "source", *OUTCOMES,
                   "failed+partial", "dead letters/s")
    for source in sources:
        share_value = failure.get((source,))
        share_text = Text(share(share_value),
                          style="red" if share_value and share_value > 0.05 else "")
        table.add_row(source, *(per_s(outcomes.get((source, outcome))) for outcome in OUTCOMES),
                      share_text, per_s(dead.get(source)))
    if not sources:
        table.add_row("(no source reports)", *[""] * (len(OUTCOMES) + 2))
    return table


def _applications(snapshot: Snapshot) -> Table:
    columns = {name: snapshot.by_key(name) for name in
               ("application_delivered", "application_retries", "latency_p50", "latency_p99")}
    apps = sorted({key[0] for values in columns.values() for key in values})
    table = _table(f"Applications: per s over {RATE_WINDOW}", "application", "delivered/s",
                   "retries/s", "latency p50", "latency p99")
    for app in apps:
        retries = columns["application_retries"].get((app,))
        table.add_row(app, per_s(columns["application_delivered"].get((app,))),
                      Text(per_s(retries), style="yellow" if retries else ""),
                      seconds(columns["latency_p50"].get((app,))),
                      seconds(columns["latency_p99"].get((app,))))
    if not apps:
        table.add_row("(no application reports)", "", "", "", "")
    return table


def _lag(snapshot: Snapshot) -> Table:
    table = _table("Consumer lag", "topic", "records behind", "time behind")
    lag, behind = snapshot.by_key("consumer_lag"), snapshot.by_key("consumer_lag_seconds")
    for key in sorted(set(lag) | set(behind)):
        table.add_row(key[0], records(lag.get(key)), seconds(behind.get(key)))
    if not lag and not behind:
        table.add_row("(no topic reports)", "", "")
    return table


def _ingest(snapshot: Snapshot) -> Table:
    table = _table("Ingest pushes", "source", "code", "requests/s")
    table.columns[1].justify = "left"
    requests = snapshot.by_key("ingest_requests")
    for (source, code), value in sorted(requests.items()):
        table.add_row(source, Text(code, style="" if code.startswith("2") else "yellow"),
                      per_s(value))
    if not requests:
        table.add_row("(no pushes)", "", "")
    return table


def _alerts(alerts: Iterable[Alert], now: float) -> RenderableType:
    alerts = list(alerts)
    if not alerts:
        return Text("No alerts firing.", style="green")
    table = _table("Alerts", "alert", "state", "severity", "since", "summary")
    for column in table.columns[1:]:
        column.justify = "left"
    table.columns[4].no_wrap = False
    for alert in alerts:
        since = DASH
        if alert.active_at:
            try:
                started = datetime.fromisoformat(alert.active_at.replace("Z", "+00:00"))
                since = duration(now - started.timestamp()) + " ago"
            except ValueError:
                since = alert.active_at
        table.add_row(alert.name, Text(alert.state,
                                       style="bold red" if alert.state == "firing" else "yellow"),
                      alert.severity or DASH, since, alert.summary)
    return table


def render(snapshot: Snapshot) -> RenderableType:
    """The whole view of one snapshot."""
    when = datetime.fromtimestamp(snapshot.taken_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    header = Text.assemble(("FleetStream status", "bold"), f"  {when} UTC  ",
                           (f"Prometheus {snapshot.prometheus_url}", "dim"),
                           (f"  Flink {snapshot.flink_url}" if snapshot.flink_url else "", "dim"))
    parts: list[RenderableType] = [header, _jobs(snapshot)]
    if snapshot.prometheus_error:
        parts.append(Panel(Text(snapshot.prometheus_error, style="bold red"),
                           title="no metrics", border_style="red", expand=False))
    else:
        parts += [_sources(snapshot), _applications(snapshot), _lag(snapshot), _ingest(snapshot),
                  _alerts(snapshot.alerts, snapshot.taken_at)]
        for name, error in snapshot.query_errors.items():
            parts.append(Text(f"query {name}: {error}", style="red"))
    return Group(*_spaced(parts))


def _spaced(parts: list[RenderableType]) -> list[RenderableType]:
    spaced: list[RenderableType] = []
    for part in parts:
        if spaced:
            spaced.append(Text(""))
        spaced.append(part)
    return spaced


def run_status(prometheus_url: str, flink_url: str | None, watch_s: float | None = None,
               console: Console | None = None,
               timeout_s: float = 5.0) -> int:
    """Print the view once (exit code 1 when a server did not answer), or redraw it every
    `watch_s` seconds until Ctrl-C (exit code 0)."""
    console = console or Console()
    prometheus = PrometheusClient(prometheus_url, timeout_s)
    flink = FlinkClient(flink_url, timeout_s) if flink_url else None
    if watch_s is None:
        snapshot = take_snapshot(prometheus, flink)
        console.print(render(snapshot))
        return 0 if snapshot.reachable else 1
    try:
        with Live(render(take_snapshot(prometheus, flink)), console=console,
                  auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(watch_s)
                live.update(render(take_snapshot(prometheus, flink)), refresh=True)
    except KeyboardInterrupt:
        return 0

