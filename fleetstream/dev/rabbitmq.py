"""RabbitMQ, the AMQP broker the `amqp` ingest bridge consumes from.

Installed from Debian (`apt-get install rabbitmq-server`, 3.10) when
`/usr/sbin/rabbitmq-server` is missing, and run as our own process (not the system
service) as the current user: node `fleetstream@localhost`, AMQP on 127.0.0.1:5672
only, a configuration file of our own, its database and logs under the service's data
folder, no plugins. Erlang's port mapper (epmd) is asked to listen on loopback only; it
is started by the node and, as Erlang does, stays up after the node stops. The default
`guest`/`guest` login works from loopback.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fleetstream.dev.service import Service, apt_install, port_open

RABBITMQ_SERVER = Path("/usr/sbin/rabbitmq-server")
#: the scripts themselves: the ones in /usr/sbin switch to the `rabbitmq` user when run as root
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class RabbitMQService(Service):
    """A RabbitMQ node on 127.0.0.1."""

    name = "rabbitmq"
    start_timeout_s = 90.0

    def __init__(self, port: int = 5672, *, name: str = "rabbitmq",
                 node: str = "fleetstream@localhost") -> None:
        """`name` and `node` tell apart several brokers (files, Erlang node name)."""
        super().__init__(port)
        self.name = name
        self.node = node

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "rabbitmq.conf"

    def install(self) -> None:
        if not RABBITMQ_SERVER.exists():
            apt_install("rabbitmq", "rabbitmq-server")

    def prepare(self) -> None:
        self.config_path.write_text("\n".join([
            f"listeners.tcp.1 = 127.0.0.1:{self.port}",
            "log.console = true", "log.console.level = warning", "log.file = false",
            # a laptop's disk: do not block publishers below RabbitMQ's default 50 MB free
            "disk_free_limit.absolute = 10MB",
        ]) + "\n")
        (self.data_dir / "enabled_plugins").write_text("[].\n")

    def environment(self) -> dict[str, str]:
        return {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000),
            "RABBITMQ_CONFIG_FILE": str(self.config_path),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.data_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.data_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.data_dir / "log"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def command(self) -> list[str]:
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        done = subprocess.run([str(RABBITMQ_BIN / "rabbitmq-diagnostics"), "-q", "ping"],
                              capture_output=True, env={**os.environ, **self.environment()},
                              timeout=30)
        return done.returncode == 0
