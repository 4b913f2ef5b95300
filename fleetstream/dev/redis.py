"""Redis, the latest-state store (DATA-CONTRACTS §10) that the jobs write and `fleetstream api` reads.

Installed from Debian (`apt-get install redis-server`, 7.0) when `/usr/bin/redis-server`
is missing, and run as our own process (not the system service) as the current user:
127.0.0.1:6379 only, protected mode on, a configuration file of our own and its data
under the service's data folder. Persistence: an append-only file fsynced once a second
(`appendonly yes`, `appendfsync everysec`: a crash of the machine loses at most about a
second of writes, a crash of Redis alone none) plus RDB snapshots as Redis's defaults
take them; docs/state.md says what that means for the state.
"""
from __future__ import annotations

import socket
from pathlib import Path

from fleetstream.dev.service import Service, apt_install, port_open

REDIS_SERVER = Path("/usr/bin/redis-server")


class RedisService(Service):
    """A Redis server on 127.0.0.1."""

    name = "redis"
    start_timeout_s = 30.0

    def __init__(self, port: int = 6379, *, name: str = "redis") -> None:
        """`name` tells apart several servers (files and data folders)."""
        super().__init__(port)
        self.name = name

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def install(self) -> None:
        if not REDIS_SERVER.exists():
            apt_install("redis", "redis-server")

    def prepare(self) -> None:
        self.config_path.write_text("\n".join([
            "bind 127.0.0.1", f"port {self.port}", "protected-mode yes",
            f'dir "{self.data_dir}"', "daemonize no", 'logfile ""', "loglevel warning",
            "appendonly yes", "appendfsync everysec", 'appendfilename "appendonly.aof"',
            "save 3600 1 300 100 60 10000", 'dbfilename "dump.rdb"',
            "databases 16",
            # a vehicle's hash (21 fields of ~100 B values) stays a compact listpack: ~17 % less
            # memory than a hashtable (docs/state.md)
            "hash-max-listpack-value 512",
        ]) + "\n")

    def command(self) -> list[str]:
        return [str(REDIS_SERVER), str(self.config_path)]

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False
