"""moto in server mode: a local S3 and Kinesis for the `s3` and `kinesis` sinks.

`pip install "moto[server]"` provides `moto_server`; point boto3 (or the
sinks' `endpoint_url`) at `http://127.0.0.1:5000` with any key. State lives in
memory and is gone when the server stops.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fleetstream.dev.service import Service, ServiceError


class MotoService(Service):
    """`moto_server` on 127.0.0.1."""

    name = "moto"
    start_timeout_s = 30.0

    def __init__(self, port: int = 5000) -> None:
        super().__init__(port)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def install(self) -> None:
        if self._executable() is None:
            raise ServiceError('moto: `moto_server` not found; pip install "moto[server]" '
                               "(requirements-sinks.txt)")

    def command(self) -> list[str]:
        return [str(self._executable()), "-H", "127.0.0.1", "-p", str(self.port)]

    @staticmethod
    def _executable() -> Path | None:
        beside_python = Path(sys.executable).with_name("moto_server")
        if beside_python.exists():
            return beside_python
        found = shutil.which("moto_server")
        return Path(found) if found else None
