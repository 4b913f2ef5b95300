"""`fleetstream exporter` and `fleetstream monitoring rules`: the commands behind the metrics.

Kept out of cli.py so that the monitoring package is imported only when one of
these commands runs.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

EXPORTER_PORT = 9464


def add_monitoring_parsers(commands: argparse._SubParsersAction) -> None:
    """Register `exporter` and `monitoring`."""
    exporter = commands.add_parser(
        "exporter", help="serve the metrics Flink cannot give: consumer lag, approvals",
        description="Serve /metrics for Prometheus: the streaming job's consumer lag per raw "
                    "topic in records and seconds (from Kafka's committed offsets), approved "
                    "vehicles per application (from the activations topic), and the "
                    "applications' ids and sink types that the recording rules join to "
                    "Flink's counters (docs/operations.md). Reads the same settings as "
                    "`fleetstream stream`; `fleetstream dev up`'s Prometheus scrapes "
                    f"127.0.0.1:{EXPORTER_PORT}.")
    exporter.add_argument("--config", default="flink-runner.yaml",
                          help="stream settings (default %(default)s)")
    exporter.add_argument("--listen", default=f"127.0.0.1:{EXPORTER_PORT}", metavar="HOST:PORT",
                          help="where to serve /metrics (default %(default)s)")
    exporter.set_defaults(handler=_exporter)

    monitoring = commands.add_parser(
        "monitoring", help="Prometheus rules: render them with your alert thresholds",
        description="Prometheus configuration for FleetStream (docs/operations.md).")
    actions = monitoring.add_subparsers(dest="action", required=True, metavar="ACTION")
    rules = actions.add_parser(
        "rules", help="print the recording and alerting rules",
        description="Print Prometheus's rules file: recording rules giving DATA-CONTRACTS "
                    "§9's metric names from Flink's, and the alerts. Thresholds default to "
                    "the shipped ones; --thresholds FILE changes any of them, e.g. "
                    "`failure_share: 0.02` and `silent_for: 30m`.")
    rules.add_argument("--thresholds", metavar="FILE", help="YAML file of threshold: value")
    rules.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    rules.set_defaults(handler=_rules)


def _rules(args: argparse.Namespace) -> int:
    from fleetstream.monitoring.rules import Thresholds, render_rules
    text = render_rules(Thresholds.load(args.thresholds) if args.thresholds else Thresholds())
    if args.output:
        with open(args.output, "w") as output:
            output.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _exporter(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from fleetstream.monitoring.exporter import FleetCollector
    from fleetstream.settings.stream import load_stream_settings
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen: expected HOST:PORT, got {args.listen!r}")
    registry = CollectorRegistry()
    registry.register(FleetCollector(load_stream_settings(args.config)))
    server, thread = start_http_server(int(port), addr=host, registry=registry)
    print(f"fleetstream exporter: /metrics on http://{host}:{port}", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0
