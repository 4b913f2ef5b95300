"""Prometheus, which collects FleetStream's metrics and evaluates its alerts (§9).

Debian's `prometheus` (2.42; installed with apt when `/usr/bin/prometheus` is
missing), run as our own process on 127.0.0.1:9090 with the configuration of
`fleetstream.monitoring.scrape_config`: Flink's reporters (dev/flink.py
PROMETHEUS_PORTS) and FleetStream's processes (file targets under
`data/prometheus/targets/`), the rules rendered from the default thresholds (or
the YAML file named by $FLEETSTREAM_ALERT_THRESHOLDS), alerts to Alertmanager on
9093. Two days of data under the service's folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from fleetstream.dev.flink import PROMETHEUS_PORTS
from fleetstream.dev.service import Service, apt_install, http_ready
from fleetstream.monitoring.rules import Thresholds, render_rules
from fleetstream.monitoring.scrape_config import (DEFAULT_TARGETS, prometheus_config,
                                                  write_targets)

PROMETHEUS = Path("/usr/bin/prometheus")
THRESHOLDS_ENV = "FLEETSTREAM_ALERT_THRESHOLDS"


class PrometheusService(Service):
    """A Prometheus server on 127.0.0.1."""

    name = "prometheus"
    start_timeout_s = 60.0

    def __init__(self, port: int = 9090, *, name: str = "prometheus",
                 alertmanager: str | None = "127.0.0.1:9095",
                 flink_targets: Sequence[str] = tuple(f"127.0.0.1:{p}" for p in PROMETHEUS_PORTS),
                 thresholds: Thresholds | None = None, scrape_interval_s: float = 10.0,
                 evaluation_interval_s: float | None = None) -> None:
        """`name` tells apart several servers; tests shorten the intervals and thresholds."""
        super().__init__(port)
        self.name = name
        self.alertmanager = alertmanager
        self.flink_targets = tuple(flink_targets)
        self.thresholds = thresholds
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_dir(self) -> Path:
        """Write `<name>.json` here (scrape_config.write_targets) to have a process scraped."""
        return self.data_dir / "targets"

    def install(self) -> None:
        if not PROMETHEUS.exists():
            apt_install("prometheus", "prometheus")

    def prepare(self) -> None:
        thresholds = self.thresholds
        if thresholds is None:
            given = os.environ.get(THRESHOLDS_ENV)
            thresholds = Thresholds.load(given) if given else Thresholds()
        rules = self.data_dir / "fleetstream.rules.yml"
        rules.write_text(render_rules(thresholds))
        if not self.targets_dir.exists():
            write_targets(self.targets_dir, "default", DEFAULT_TARGETS)
        (self.data_dir / "prometheus.yml").write_text(prometheus_config(
            self.flink_targets, self.targets_dir, rules, self.alertmanager,
            self.scrape_interval_s, self.evaluation_interval_s))

    def command(self) -> list[str]:
        return [str(PROMETHEUS), f"--config.file={self.data_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"]

    def ready(self) -> bool:
        return http_ready(f"{self.url}/-/ready")
