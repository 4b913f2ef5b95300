"""`fleetstream status` and `fleetstream dashboard`: the operator views' command line.

Kept out of cli.py (which imports Beam only for the pipeline commands) so that these
two parse and start without Beam; the views themselves are `fleetstream.operations`.
"""
from __future__ import annotations

import argparse
import sys

#: where the operator views look by default (`fleetstream dev up` serves both there)
DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"
DEFAULT_FLINK_REST = "http://127.0.0.1:8081"


def _seconds_at_least_1(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 second, got {text!r}")
    return value


def add_operations_parsers(commands: argparse._SubParsersAction) -> None:
    """Register `status` and `dashboard`."""
    status = commands.add_parser(
        "status", help="what the running FleetStream does now: jobs, rates, lag, latency, alerts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Print one screen about the running FleetStream, from Prometheus (the DATA-CONTRACTS
section 9 metrics) and Flink's REST API:

  Flink jobs      each job's state (RUNNING green; RESTARTING, FAILING, FAILED red)
  Sources         messages/s by outcome (read, ok, partial, failed, ignored), the share
                  of failed and partial among those read, dead letters/s
  Applications    documents delivered/s, delivery retries/s, latency p50 and p99
                  (receive time to sink acknowledgement, over 5 minutes)
  Consumer lag    records behind the newest offset, per topic
  Ingest          push requests/s per source and answer code
  Alerts          what Prometheus' alert rules hold (firing, pending)

Rates are per second over the last minute. A server that does not answer is said in
the view; a one-shot run then exits 1 (0 when both answered), so scripts can use it.""",
        epilog="""\
examples:
  fleetstream status                                  # once, local servers
  fleetstream status --watch                          # redraw every 5 s until Ctrl-C
  fleetstream status --prometheus http://prom:9090 --flink http://flink:8081 --watch 15""")
    _prometheus_argument(status)
    _flink_argument(status)
    status.add_argument("--watch", nargs="?", const=5.0, type=_seconds_at_least_1,
                        metavar="SECONDS",
                        help="keep the view on screen and redraw it every SECONDS "
                             "(default 5) until Ctrl-C")
    status.add_argument("--timeout", type=_seconds_at_least_1, default=5.0, metavar="SECONDS",
                        help="how long to wait for each answer (default %(default)s)")
    status.set_defaults(handler=_status)

    dashboard = commands.add_parser(
        "dashboard", help="serve a web page of throughput, failures, deliveries, lag, "
                          "latency and alerts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Serve one web page that charts, over the last minutes or hours, what Prometheus has
about the running FleetStream: messages read and the failed-and-partial share per
source, documents delivered and retries per application, dead letters, consumer lag
per topic, delivery latency p50 and p99, ingest requests per answer code; the alerts
firing now and the Flink jobs' states. The page refreshes itself (every 15 s).

The page asks this process, which asks Prometheus only the fixed queries the page
shows (GET /api/query/NAME, GET /api/alerts) and Flink its job list (GET /api/jobs):
the browser never sends PromQL. When Prometheus does not answer, the page says so
instead of drawing empty charts; when Flink does not, the job list says so. The
chart library (uPlot) is served from the package: nothing is loaded from elsewhere.""",
        epilog="""\
examples:
  fleetstream dashboard                               # http://127.0.0.1:8092/
  fleetstream dashboard --listen 0.0.0.0:8092 --prometheus http://prom:9090 \\
                        --flink http://flink:8081""")
    dashboard.add_argument("--listen", default="127.0.0.1:8092", metavar="HOST:PORT",
                           help="address to serve the page on (default %(default)s; the page "
                                "has no login, so keep it on loopback or behind a proxy that "
                                "has one)")
    _prometheus_argument(dashboard)
    _flink_argument(dashboard)
    dashboard.set_defaults(handler=_dashboard)


def _prometheus_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", default=DEFAULT_PROMETHEUS, metavar="URL",
                        help="Prometheus' address (default %(default)s)")


def _flink_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flink", default=DEFAULT_FLINK_REST, metavar="URL",
                        help="Flink's REST API, for the jobs' states (default %(default)s)")


def _status(args: argparse.Namespace) -> int:
    from fleetstream.operations.status import run_status
    return run_status(args.prometheus, args.flink, args.watch, timeout_s=args.timeout)


def _dashboard(args: argparse.Namespace) -> int:
    from fleetstream.operations.dashboard import parse_listen, serve_dashboard
    host, port = parse_listen(args.listen)
    print(f"fleetstream dashboard: http://{host}:{port}/ (Prometheus at {args.prometheus}, "
          f"Flink at {args.flink})", file=sys.stderr)
    try:
        serve_dashboard(host, port, args.prometheus, args.flink)
    except OSError as error:   # the address is taken or not ours
        print(f"fleetstream dashboard: cannot listen on {args.listen}: {error.strerror or error}",
              file=sys.stderr)
        return 2
    return 0
