"""Prometheus's rules for FleetStream: §9's names from Flink's, and the alerts.

`render_rules(thresholds)` gives the whole rules file; the shipped one,
`fleetstream/monitoring/fleetstream.rules.yml`, is `fleetstream monitoring rules`
with the default thresholds (a test keeps the two equal). An operator changes a
threshold in one place, a small YAML file of `Thresholds` fields, and renders again:

    fleetstream monitoring rules --thresholds thresholds.yml -o fleetstream.rules.yml

How Flink's names become ours: Flink's reporter names a Beam counter
`fleetstream:<scope>.<what>` `flink_taskmanager_job_task_operator_fleetstream_<scope>_<what>`
(every character outside `[a-zA-Z0-9_]` turned into `_`). `FLINK_RELABELING`
(the Flink scrape job's `metric_relabel_configs`) splits those names into
`fleetstream_flink_source_counter{source, outcome}`,
`fleetstream_flink_app_counter{app_key, counter}` and
`fleetstream_flink_dead_letter_counter{source, stage}`; the recording rules sum them
per §9's labels, and join `app_key` with the exporter's `fleetstream_application_info`
for the application's id and sink type. A cancelled job's operators unregister
their metrics, so its series go stale.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from fleetstream.schemas.errors import ConfigError, refuse_unknown
from fleetstream.schemas.metrics import INF_BUCKET, LATENCY_BUCKET_PREFIX, LATENCY_BUCKETS_MS
from fleetstream.settings.yaml_file import read_yaml

SHIPPED_RULES = Path(__file__).with_name("fleetstream.rules.yml")

_OPERATOR = "flink_taskmanager_job_task_operator_fleetstream_"
SOURCE_OUTCOMES = "read|ok|partial|failed|ignored|duplicate|late|delivered|filtered"
APP_COUNTERS = ("delivered|filtered|documents|batches|bytes|retries|failed_batches|"
                f"webhook_disabled|{LATENCY_BUCKET_PREFIX}[a-z0-9]+|latency_sum_ms")
DEAD_LETTER_STAGES = "map|ingest|deliver"

#: the Flink scrape job's metric_relabel_configs (order matters: the first match renames)
FLINK_RELABELING: list[dict[str, Any]] = [
    *({"source_labels": ["__name__"], "regex": f"{_OPERATOR}{pattern}",
       "target_label": label, "replacement": group}
      for pattern, pairs in (
          (f"app_(.+)_({APP_COUNTERS})", (("app_key", "$1"), ("counter", "$2"),
                                          ("__name__", "fleetstream_flink_app_counter"))),
          (f"dead_letters_(.+)_({DEAD_LETTER_STAGES})",
           (("source", "$1"), ("stage", "$2"),
            ("__name__", "fleetstream_flink_dead_letter_counter"))),
          (f"(.+)_({SOURCE_OUTCOMES})", (("source", "$1"), ("outcome", "$2"),
                                         ("__name__", "fleetstream_flink_source_counter"))))
      for label, group in pairs),
]


@dataclass(frozen=True)
class Thresholds:
    """Every alert's threshold, in one place."""

    #: a source's failed share of messages read, over `failure_window`
    failure_share: float = 0.05
    failure_window: str = "5m"
    #: a source silent this long while some vehicle is approved (and it sent in the last hour)
    silent_for: str = "15m"
    #: age of the oldest raw record the job has not committed
    lag_seconds: float = 120.0
    #: delivery retries per application over `delivery_window` before alerting
    delivery_retries: float = 10.0
    delivery_window: str = "10m"
    #: share of ingest requests answered 5xx per source over `failure_window`
    ingest_5xx_share: float = 0.01
    #: how long a condition holds before the alert fires
    for_duration: str = "1m"

    @classmethod
    def load(cls, path: str | Path) -> "Thresholds":
        """Thresholds from a YAML file of field: value (others keep their defaults)."""
        raw = read_yaml(Path(path), "thresholds file") or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of threshold: value")
        refuse_unknown(str(path), raw, {f.name for f in fields(cls)})
        values = {**asdict(cls()), **raw}
        for field_ in fields(cls):
            kind = float if field_.type == "float" else str
            try:
                values[field_.name] = kind(values[field_.name])
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: {field_.name}: expected a {kind.__name__}, got "
                                  f"{values[field_.name]!r}") from None
        return cls(**values)


def _app(counter: str, by: str = "application, sink") -> str:
    """A per-application sum of the counters matching `counter`, labelled `by` the
    application's id (and sink type) from the exporter's fleetstream_application_info."""
    return (f'sum by ({by}) (sum by (app_key) '
            f'(fleetstream_flink_app_counter{{counter=~"{counter}"}}) * on (app_key) '
            f'group_left (application, sink) fleetstream_application_info)')


def recording_rules() -> list[dict[str, str]]:
    """§9's metrics from the relabelled Flink series."""
    rules = [
        {"record": "fleetstream_messages_total",
         "expr": 'sum by (source, outcome) '
                 '(fleetstream_flink_source_counter{outcome=~"read|ok|partial|failed|ignored"})'},
        {"record": "fleetstream_documents_delivered_total", "expr": _app("documents")},
        {"record": "fleetstream_delivery_retries_total", "expr": _app("retries")},
        {"record": "fleetstream_delivery_failed_batches_total", "expr": _app("failed_batches")},
        {"record": "fleetstream_webhook_disabled_total", "expr": _app("webhook_disabled")},
        # map-stage dead letters are the failed and partial messages; the others are counted
        {"record": "fleetstream_dead_letters_total",
         "expr": 'label_replace(sum by (source) (fleetstream_flink_source_counter'
                 '{outcome=~"failed|partial"}), "stage", "map", "", "") or '
                 'sum by (source, stage) (fleetstream_flink_dead_letter_counter)'},
    ]
    # cumulative buckets: each `le` adds up the counters of every bucket up to it
    bounds = [str(ms) for ms in LATENCY_BUCKETS_MS]
    buckets = []
    for index, ms in enumerate([*LATENCY_BUCKETS_MS, None]):
        included = "|".join(bounds[:index + 1] if ms is not None else [*bounds, INF_BUCKET])
        le = f"{ms / 1000:g}" if ms is not None else "+Inf"
        per_application = _app(f"{LATENCY_BUCKET_PREFIX}({included})", by="application")
        buckets.append(f'label_replace({per_application}, "le", "{le}", "", "")')
    rules += [
        {"record": "fleetstream_delivery_latency_seconds_bucket", "expr": " or ".join(buckets)},
        {"record": "fleetstream_delivery_latency_seconds_count",
         "expr": _app(f"{LATENCY_BUCKET_PREFIX}({'|'.join([*bounds, INF_BUCKET])})",
                      by="application")},
        {"record": "fleetstream_delivery_latency_seconds_sum",
         "expr": f'{_app("latency_sum_ms", by="application")} / 1000'},
    ]
    return rules


def alert_rules(t: Thresholds) -> list[dict[str, Any]]:
    """The alerts, each with what it means for the Slack message."""
    failed = (f'sum by (source) (increase(fleetstream_messages_total{{outcome="failed"}}'
              f'[{t.failure_window}]))')
    read = (f'sum by (source) (increase(fleetstream_messages_total{{outcome="read"}}'
            f'[{t.failure_window}]))')
    ingest_5xx = (f'sum by (source) (rate(fleetstream_ingest_requests_total{{code=~"5.."}}'
                  f'[{t.failure_window}]))')
    ingest_all = f'sum by (source) (rate(fleetstream_ingest_requests_total[{t.failure_window}]))'

    def alert(name: str, expr: str, summary: str, severity: str = "warning",
              duration: str | None = None) -> dict[str, Any]:
        return {"alert": name, "expr": expr, "for": duration or t.for_duration,
                "labels": {"severity": severity},
                "annotations": {"summary": summary,
                                "runbook": f"docs/operations.md#{name.lower()}"}}

    return [
        alert("FleetStreamSourceFailing", f"({failed} / {read}) > {t.failure_share:g}",
              "Source {{ $labels.source }}: {{ $value | humanizePercentage }} of messages failed "
              f"to map over {t.failure_window} (threshold {t.failure_share:.0%})", "critical"),
        alert("FleetStreamSourceSilent",
              f'sum by (source) (increase(fleetstream_messages_total{{outcome="read"}}'
              f'[{t.silent_for}])) == 0 and on () (sum(fleetstream_approved_vehicles) > 0)'
              f' unless sum by (source) (increase(fleetstream_messages_total'
              f'{{outcome="read"}}[1h])) == 0',
              f"Source {{{{ $labels.source }}}} sent nothing for {t.silent_for} while vehicles "
              f"are approved"),
        alert("FleetStreamConsumerLag", f"fleetstream_consumer_lag_seconds > {t.lag_seconds:g}",
              "The job is {{ $value | humanizeDuration }} behind on {{ $labels.topic }}"),
        alert("FleetStreamDeliveryRetries",
              f"increase(fleetstream_delivery_retries_total[{t.delivery_window}]) "
              f"> {t.delivery_retries:g}",
              "Application {{ $labels.application }} ({{ $labels.sink }}): {{ $value | "
              f"printf \"%.0f\" }}}} delivery retries over {t.delivery_window}"),
        alert("FleetStreamDeliveryDeadLetters",
              f"increase(fleetstream_delivery_failed_batches_total[{t.delivery_window}]) > 0",
              "Application {{ $labels.application }} ({{ $labels.sink }}): batches could not "
              "be delivered and went to the dead letters", "critical", duration="0s"),
        alert("FleetStreamWebhookDisabled",
              f"increase(fleetstream_webhook_disabled_total[{t.delivery_window}]) > 0",
              "Application {{ $labels.application }}: its webhook answered 410 Gone and "
              "was disabled", "critical", duration="0s"),
        alert("FleetStreamJobRestarts", "increase(flink_jobmanager_job_numRestarts[10m]) > 0",
              "Flink job {{ $labels.job_name }} restarted {{ $value | printf \"%.0f\" }} "
              "times in 10 minutes", "critical", duration="0s"),
        alert("FleetStreamIngestErrors", f"({ingest_5xx} / {ingest_all}) > {t.ingest_5xx_share:g}",
              "Ingest for {{ $labels.source }}: {{ $value | humanizePercentage }} of pushes "
              "answered 5xx"),
    ]


def render_rules(thresholds: Thresholds = Thresholds()) -> str:
    """The whole rules file."""
    document = {"groups": [
        {"name": "fleetstream-names", "rules": recording_rules()},
        {"name": "fleetstream-alerts", "rules": alert_rules(thresholds)},
    ]}
    return ("# Rendered by `fleetstream monitoring rules` (fleetstream/monitoring/rules.py);\n"
            "# change thresholds there with --thresholds, not here.\n"
            + yaml.safe_dump(document, sort_keys=False, width=1000))
