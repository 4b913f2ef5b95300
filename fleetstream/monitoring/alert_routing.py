"""Alertmanager's configuration: every FleetStream alert to one Slack channel.

The Slack incoming-webhook URL is a secret: it stays out of the file, in a file of
its own (`api_url_file`, mode 600) written from the environment variable. Without
it, alerts are kept and shown by Alertmanager but sent nowhere.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

SLACK_URL_ENV = "FLEETSTREAM_SLACK_WEBHOOK_URL"
SLACK_TITLE = ('[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}'
               '{{ if .CommonLabels.source }} ({{ .CommonLabels.source }}){{ end }}'
               '{{ if .CommonLabels.application }} ({{ .CommonLabels.application }}){{ end }}')
SLACK_TEXT = '{{ range .Alerts }}{{ .Annotations.summary }}\n{{ end }}'


def alertmanager_config(folder: Path, slack_url: str | None, group_wait_s: float = 30.0,
                        group_interval_s: float = 300.0, repeat_interval: str = "4h") -> str:
    """The alertmanager.yml text; writes the Slack URL file into `folder` when given."""
    receiver: dict = {"name": "slack" if slack_url else "nowhere"}
    if slack_url:
        url_file = folder / "slack-webhook-url"
        url_file.write_text(slack_url)
        os.chmod(url_file, 0o600)
        receiver["slack_configs"] = [{
            "api_url_file": str(url_file), "send_resolved": True,
            "title": SLACK_TITLE, "text": SLACK_TEXT}]
    config = {
        "route": {"receiver": receiver["name"], "group_by": ["alertname", "source", "application"],
                  "group_wait": f"{group_wait_s:g}s", "group_interval": f"{group_interval_s:g}s",
                  "repeat_interval": repeat_interval},
        "receivers": [receiver],
    }
    return yaml.safe_dump(config, sort_keys=False)
