"""Mosquitto, the MQTT broker the `mqtt` sink publishes to.

Installed from Debian (`apt-get install mosquitto`) when `/usr/sbin/mosquitto`
is missing, run as the current user with a configuration of our own: one
listener on 127.0.0.1, no persistence, no limit on the QoS 1/2 messages queued for a
subscriber, and, when given, a password file and an ACL file (made by
`fleetstream.dev.mqtt_acl.write_broker_auth`). Without them the broker accepts
anonymous clients.

The queue: Mosquitto's default `max_queued_messages 1000` drops (logging "Outgoing
messages are being dropped for client ...") what a subscriber that is slower than the
sink, or still reconnecting after a restart, has not taken yet. A test's subscriber on a
busy machine is such a subscriber: the sink's batches after an outage arrived
acknowledged and were then dropped for it (tests/test_sink_outage_flink.py failed so,
twice on 2026-12-07). Real brokers are their operators' to size.
"""
from __future__ import annotations

import getpass
from pathlib import Path

from fleetstream.dev.service import Service, apt_install

MOSQUITTO = Path("/usr/sbin/mosquitto")


class MosquittoService(Service):
    """A Mosquitto broker on 127.0.0.1."""

    name = "mosquitto"
    start_timeout_s = 15.0

    def __init__(self, port: int = 1883, *, name: str = "mosquitto",
                 password_file: Path | None = None, acl_file: Path | None = None,
                 root: Path | None = None) -> None:
        """`name` tells apart several brokers (their pid, log and data files)."""
        super().__init__(port, root)
        self.name = name
        self.password_file = password_file
        self.acl_file = acl_file

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def install(self) -> None:
        if not MOSQUITTO.exists():
            apt_install("mosquitto", "mosquitto")

    def prepare(self) -> None:
        # `user`: started as root, Mosquitto would switch to user "mosquitto",
        # which cannot read our files under $FLEETSTREAM_HOME.
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stdout",
                 "max_queued_messages 0",
                 f"user {getpass.getuser()}",
                 f"allow_anonymous {'false' if self.password_file else 'true'}"]
        if self.password_file:
            lines.append(f"password_file {Path(self.password_file).resolve()}")
        if self.acl_file:
            lines.append(f"acl_file {Path(self.acl_file).resolve()}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [str(MOSQUITTO), "-c", str(self.config_path)]
