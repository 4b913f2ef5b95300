"""Alertmanager, which sends FleetStream's alerts to Slack.

Debian's `prometheus-alertmanager` (0.25; installed with apt when missing), run as
our own process on 127.0.0.1:9095 (cluster gossip off) with the routing of
`fleetstream.monitoring.alert_routing`: the Slack incoming-webhook URL comes from
$FLEETSTREAM_SLACK_WEBHOOK_URL when the service starts; without it alerts are
shown at http://127.0.0.1:9095 and sent nowhere.
"""
from __future__ import annotations

import os
from pathlib import Path

from fleetstream.dev.service import Service, apt_install, http_ready
from fleetstream.monitoring.alert_routing import SLACK_URL_ENV, alertmanager_config

ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


class AlertmanagerService(Service):
    """An Alertmanager on 127.0.0.1."""

    name = "alertmanager"
    start_timeout_s = 30.0

    def __init__(self, port: int = 9095, *, name: str = "alertmanager",
                 slack_url: str | None = None, group_wait_s: float = 30.0,
                 group_interval_s: float = 300.0) -> None:
        """`slack_url` overrides the environment's; tests shorten the grouping waits."""
        super().__init__(port)
        self.name = name
        self.slack_url = slack_url
        self.group_wait_s = group_wait_s
        self.group_interval_s = group_interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def install(self) -> None:
        if not ALERTMANAGER.exists():
            apt_install("alertmanager", "prometheus-alertmanager")

    def prepare(self) -> None:
        slack_url = self.slack_url or os.environ.get(SLACK_URL_ENV) or None
        (self.data_dir / "alertmanager.yml").write_text(alertmanager_config(
            self.data_dir, slack_url, self.group_wait_s, self.group_interval_s))

    def command(self) -> list[str]:
        return [str(ALERTMANAGER), f"--config.file={self.data_dir / 'alertmanager.yml'}",
                f"--storage.path={self.data_dir / 'storage'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address="]

    def ready(self) -> bool:
        return http_ready(f"{self.url}/-/ready")
