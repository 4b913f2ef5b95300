"""`fleetstream dashboard`: one web page of what Prometheus has about the running FleetStream.

    serve_dashboard("127.0.0.1", 8092, "http://127.0.0.1:9090")   # until SIGINT/SIGTERM

The page (`static/index.html`, `dashboard.js`) charts the `PANELS` over a chosen range
(15 minutes to 7 days) with uPlot, which is vendored under `static/vendor/uplot/` (no
CDN), shows each series' value now in a table beside its chart, lists the firing and
pending alerts and the Flink jobs' states. It refreshes every 15 s.

The page never talks to Prometheus or Flink: it asks this process, whose API answers only
the named queries of `queries.QUERIES`, the alerts and the job list, so nobody can send
PromQL (or anything else) through it.

| route | answer |
|---|---|
| `GET /` | the page |
| `GET /static/...` | its script, styles, uPlot |
| `GET /api/panels` | the charts: title, unit, the query names each draws |
| `GET /api/query/NAME?range=SECONDS` | the query over the range (240 points) and now; 404 for any other name |
| `GET /api/alerts` | the alerts Prometheus holds |
| `GET /api/jobs` | the Flink jobs, live ones first |

A Prometheus that does not answer makes the API answer 502 with `{"error": "Prometheus at
URL is unreachable: ..."}`, which the page shows in place of its charts; a Flink that does
not answer, the same for `/api/jobs`, which the page shows in place of the job list only.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from fleetstream.operations.flink import DEFAULT_FLINK, TROUBLE_STATES, AsyncFlinkClient
from fleetstream.operations.prometheus import AsyncPrometheusClient, QueryError, Unreachable
from fleetstream.operations.queries import QUERIES

STATIC = Path(__file__).with_name("static")
UPLOT_VERSION = "1.6.32"
#: the range a chart may cover, seconds
MIN_RANGE_S, MAX_RANGE_S, DEFAULT_RANGE_S = 300, 7 * 86400, 1800
#: points per series in a chart
POINTS = 240
#: only our own files: no CDN, no inline script
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Panel:
    """One chart of the page."""

    id: str
    title: str
    #: how the values read: "per_s", "ratio", "seconds", "records"
    unit: str
    #: the named queries it draws (their series side by side)
    queries: tuple[str, ...]
    #: one line under the title
    note: str = ""


PANELS = (
    Panel("throughput", "Messages read per source", "per_s", ("source_throughput",),
          "messages per second taken from each source's raw topic"),
    Panel("failure_share", "Failed and partial share per source", "ratio",
          ("source_failure_share",), "mapping outcomes failed + partial over those read"),
    Panel("delivered", "Documents delivered per application", "per_s",
          ("application_delivered",), "documents per second the sinks acknowledged"),
    Panel("retries", "Delivery retries per application", "per_s", ("application_retries",),
          "failed sink writes per second that were retried"),
    Panel("latency", "Delivery latency p50 and p99", "seconds", ("latency_p50", "latency_p99"),
          "receive time to sink acknowledgement, over 5 minutes"),
    Panel("lag", "Consumer lag per topic", "records", ("consumer_lag",),
          "records behind the newest offset"),
    Panel("lag_seconds", "Consumer lag per topic in time", "seconds", ("consumer_lag_seconds",),
          "age of the oldest record the job has not committed"),
    Panel("dead_letters", "Dead letters per source and stage", "per_s", ("dead_letters",),
          "dead letters written per second"),
    Panel("ingest", "Ingest push requests per source and code", "per_s", ("ingest_requests",),
          "push requests answered per second"),
)
assert all(name in QUERIES for panel in PANELS for name in panel.queries)


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) as (host, port); ValueError when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen: expected HOST:PORT, e.g. 127.0.0.1:8092, got {text!r}")
    return host.strip("[]"), int(port)


def _finite(value: float) -> float | None:
    """JSON has no NaN nor Infinity: a value Prometheus could not compute becomes null."""
    return value if math.isfinite(value) else None


def range_and_step(requested: str | None, now: float) -> tuple[float, float, float]:
    """(start, end, step) of a chart over `requested` seconds (clamped), with `end` on a
    multiple of `step` so that every query of a refresh shares its timestamps."""
    try:
        span = float(requested) if requested else DEFAULT_RANGE_S
    except ValueError:
        span = DEFAULT_RANGE_S
    if not math.isfinite(span):
        span = DEFAULT_RANGE_S
    span = min(max(span, MIN_RANGE_S), MAX_RANGE_S)
    step = max(round(span / POINTS), 1)
    end = math.floor(now / step) * step
    return end - step * POINTS, end, float(step)


def _api_error(error: Exception) -> web.Response:
    return web.json_response({"error": str(error)}, status=502)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def make_app(prometheus_url: str, flink_url: str = DEFAULT_FLINK,
             clock: Callable[[], float] = time.time, timeout_s: float = 5.0) -> web.Application:
    """The dashboard's aiohttp application, asking the Prometheus at `prometheus_url` and the
    Flink REST API at `flink_url`."""
    app = web.Application(middlewares=[_security_headers])
    prometheus = AsyncPrometheusClient(prometheus_url, timeout_s)
    flink = AsyncFlinkClient(flink_url, timeout_s)

    async def close(_: web.Application) -> None:
        await prometheus.close()
        await flink.close()

    app.on_cleanup.append(close)

    async def page(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def panels(_: web.Request) -> web.Response:
        return web.json_response({
            "prometheus": prometheus.url, "flink": flink.url, "uplot": UPLOT_VERSION,
            "panels": [asdict(panel) for panel in PANELS],
            "queries": {name: {"title": q.title, "unit": q.unit, "by": list(q.by),
                               "promql": q.promql} for name, q in QUERIES.items()}})

    async def query(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        named = QUERIES.get(name)
        if named is None:
            raise web.HTTPNotFound(text=f"no query named {name!r}; the named queries are "
                                        f"{', '.join(QUERIES)}")
        start, end, step = range_and_step(request.query.get("range"), clock())
        try:
            series = await prometheus.query_range(named.promql, start, end, step)
            now = await prometheus.query(named.promql)
        except (Unreachable, QueryError) as error:
            return _api_error(error)
        return web.json_response({
            "name": name, "unit": named.unit, "start": start, "end": end, "step": step,
            "series": [{"name": named.series_name(s.labels), "labels": dict(s.labels),
                        "points": [[t, _finite(v)] for t, v in s.points]} for s in series],
            "now": sorted(({"name": named.series_name(s.labels), "labels": dict(s.labels),
                            "value": _finite(s.value)} for s in now),
                          key=lambda item: item["name"])})

    async def alerts(_: web.Request) -> web.Response:
        try:
            held = await prometheus.alerts()
        except (Unreachable, QueryError) as error:
            return _api_error(error)
        return web.json_response({"alerts": [
            {"name": a.name, "state": a.state, "severity": a.severity, "summary": a.summary,
             "labels": dict(a.labels), "active_at": a.active_at} for a in held]})

    async def jobs(_: web.Request) -> web.Response:
        try:
            listed = await flink.jobs()
        except Unreachable as error:
            return _api_error(error)
        return web.json_response({"jobs": [
            {"id": job.id, "name": job.name, "state": job.state, "live": job.live,
             "trouble": job.state in TROUBLE_STATES, "start_time_ms": job.start_time_ms,
             "duration_ms": job.duration_ms} for job in listed]})

    app.router.add_get("/", page)
    app.router.add_get("/api/jobs", jobs)
    app.router.add_get("/api/panels", panels)
    app.router.add_get("/api/query/{name}", query)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


def serve_dashboard(host: str, port: int, prometheus_url: str,
                    flink_url: str = DEFAULT_FLINK) -> None:
    """Serve the page on host:port until SIGINT or SIGTERM."""
    web.run_app(make_app(prometheus_url, flink_url), host=host, port=port, print=None,
                access_log=None)

