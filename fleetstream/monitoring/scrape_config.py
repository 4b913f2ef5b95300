"""Prometheus's configuration for FleetStream: what to scrape and where alerts go.

Two scrape jobs: `flink` (the JobManager's and TaskManagers' reporters, with
`FLINK_RELABELING` turning the job's Beam counters into FleetStream's series) and
`fleetstream` (every FleetStream process with /metrics: the ingest gateway, the
exporter, the API), whose targets are files in `targets_dir` that Prometheus
re-reads within a minute, so a new process is added by writing one file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import orjson
import yaml

from fleetstream.monitoring.rules import FLINK_RELABELING

#: where FleetStream's own processes serve /metrics by default: ingest gateway, exporter
DEFAULT_TARGETS = ("127.0.0.1:8090", "127.0.0.1:9464")


def prometheus_config(flink_targets: Sequence[str], targets_dir: Path, rules_file: Path,
                      alertmanager: str | None, scrape_interval_s: float = 10.0,
                      evaluation_interval_s: float | None = None) -> str:
    """The prometheus.yml text."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{scrape_interval_s:g}s",
                   "evaluation_interval": f"{evaluation_interval_s or scrape_interval_s:g}s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {"job_name": "flink", "static_configs": [{"targets": list(flink_targets)}],
             "metric_relabel_configs": FLINK_RELABELING},
            {"job_name": "fleetstream",
             "file_sd_configs": [{"files": [str(targets_dir / "*.json")],
                                  "refresh_interval": "10s"}]},
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return yaml.safe_dump(config, sort_keys=False)


def write_targets(targets_dir: Path, name: str, targets: Sequence[str]) -> Path:
    """A file_sd file naming FleetStream processes for the `fleetstream` job to scrape."""
    targets_dir.mkdir(parents=True, exist_ok=True)
    path = targets_dir / f"{name}.json"
    path.write_bytes(orjson.dumps([{"targets": list(targets)}]))
    return path
