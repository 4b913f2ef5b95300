"""Prometheus's rules: the shipped file, Flink's names to ours, and the alerts on test series."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fleetstream.dev.prometheus import PrometheusService
from fleetstream.monitoring.exporter import app_key, check_app_keys
from fleetstream.monitoring.rules import (FLINK_RELABELING, SHIPPED_RULES, Thresholds,
                                          render_rules)
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.metrics import latency_bucket

FLINK = "flink_taskmanager_job_task_operator_fleetstream_"


@pytest.fixture(scope="module")
def promtool() -> str:
    if shutil.which("promtool") is None:
        PrometheusService().install()       # Debian's prometheus package brings promtool
    return shutil.which("promtool") or "/usr/bin/promtool"


def test_the_shipped_rules_are_the_default_thresholds_rendered() -> None:
    assert SHIPPED_RULES.read_text() == render_rules(Thresholds()), \
        "run `fleetstream monitoring rules -o fleetstream/monitoring/fleetstream.rules.yml`"


def test_promtool_accepts_the_shipped_rules(promtool: str) -> None:
    done = subprocess.run([promtool, "check", "rules", str(SHIPPED_RULES)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _relabel(name: str) -> dict[str, str]:
    """What the Flink scrape job's metric_relabel_configs make of a metric name."""
    labels = {"__name__": name}
    for rule in FLINK_RELABELING:
        match = re.fullmatch(rule["regex"], labels[rule["source_labels"][0]])
        if match:
            labels[rule["target_label"]] = match.expand(rule["replacement"].replace("$", "\\"))
    return labels


@pytest.mark.parametrize("counter, expected", [
    ("tesla.read", {"__name__": "fleetstream_flink_source_counter", "source": "tesla",
                    "outcome": "read"}),
    ("tesla_telemetry.failed", {"__name__": "fleetstream_flink_source_counter",
                                "source": "tesla_telemetry", "outcome": "failed"}),
    ("app/fleet-a.documents", {"__name__": "fleetstream_flink_app_counter",
                               "app_key": "fleet_a", "counter": "documents"}),
    ("app/x.read.latency_le_250", {"__name__": "fleetstream_flink_app_counter",
                                   "app_key": "x_read", "counter": "latency_le_250"}),
    ("app/ins.latency_le_inf", {"__name__": "fleetstream_flink_app_counter",
                                "app_key": "ins", "counter": "latency_le_inf"}),
    ("dead_letters/bmw.deliver", {"__name__": "fleetstream_flink_dead_letter_counter",
                                  "source": "bmw", "stage": "deliver"}),
])
def test_flink_names_become_series_with_our_labels(counter: str, expected: dict) -> None:
    flink_name = FLINK + re.sub(r"[^a-zA-Z0-9_]", "_", counter)
    assert _relabel(flink_name) == expected


def test_other_flink_metrics_keep_their_names() -> None:
    assert _relabel("flink_jobmanager_job_numRestarts") == {
        "__name__": "flink_jobmanager_job_numRestarts"}
    assert _relabel(FLINK + "archive_files")["__name__"] == FLINK + "archive_files"


def test_latency_buckets_hold_their_upper_bound() -> None:
    assert latency_bucket(0) == "latency_le_50"
    assert latency_bucket(50) == "latency_le_50"
    assert latency_bucket(51) == "latency_le_100"
    assert latency_bucket(10 ** 9) == "latency_le_inf"


def test_application_ids_flink_cannot_tell_apart_are_refused() -> None:
    assert app_key("fleet-a.v2") == "fleet_a_v2"
    check_app_keys(["fleet-a", "insurer"])
    with pytest.raises(ConfigError, match="'fleet-a' and 'fleet_a'"):
        check_app_keys(["fleet-a", "fleet_a"])


def test_thresholds_come_from_a_small_yaml_file(tmp_path: Path) -> None:
    given = tmp_path / "thresholds.yml"
    given.write_text("failure_share: 0.02\nsilent_for: 30m\n")
    thresholds = Thresholds.load(given)
    assert (thresholds.failure_share, thresholds.silent_for) == (0.02, "30m")
    assert thresholds.lag_seconds == Thresholds().lag_seconds
    assert "> 0.02" in render_rules(thresholds) and "[30m]" in render_rules(thresholds)


@pytest.mark.parametrize("text, named", [
    ("failure_shar: 0.1\n", "failure_shar"),
    ("failure_share: lots\n", "failure_share"),
    ("- 1\n", "expected a mapping"),
])
def test_bad_thresholds_are_refused_naming_the_field(tmp_path: Path, text: str,
                                                      named: str) -> None:
    given = tmp_path / "thresholds.yml"
    given.write_text(text)
    with pytest.raises(ConfigError, match=named):
        Thresholds.load(given)


def test_alerts_fire_on_the_failing_source_only(promtool: str, tmp_path: Path) -> None:
    """promtool's rule tests: 50 % failed for tesla fires, 1 % for bmw does not; a source
    that stops sending while vehicles are approved fires as silent after 15 minutes."""
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(Thresholds()))
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": 'fleetstream_messages_total{source="tesla",outcome="read"}',
             "values": "0+100x20"},
            {"series": 'fleetstream_messages_total{source="tesla",outcome="failed"}',
             "values": "0+50x20"},
            {"series": 'fleetstream_messages_total{source="bmw",outcome="read"}',
             "values": "0+100x10 1000x30"},
            {"series": 'fleetstream_messages_total{source="bmw",outcome="failed"}',
             "values": "0+1x20"},
            {"series": 'fleetstream_approved_vehicles{application="fleet"}', "values": "5x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "FleetStreamSourceFailing", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "source": "tesla"},
                "exp_annotations": {
                    "summary": "Source tesla: 50% of messages failed to map over 5m "
                               "(threshold 5%)",
                    "runbook": "docs/operations.md#fleetstreamsourcefailing"}}]},
            {"eval_time": "12m", "alertname": "FleetStreamSourceSilent", "exp_alerts": []},
            {"eval_time": "28m", "alertname": "FleetStreamSourceSilent", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "source": "bmw"},
                "exp_annotations": {
                    "summary": "Source bmw sent nothing for 15m while vehicles are approved",
                    "runbook": "docs/operations.md#fleetstreamsourcesilent"}}]},
        ]}]}
    test_file = tmp_path / "tests.yml"
    test_file.write_text(yaml.safe_dump(tests))
    done = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
