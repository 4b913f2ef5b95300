"""Azurite, Microsoft's local Azure Blob Storage, for the `azure_blob` sink.

Installed with npm into `$FLEETSTREAM_HOME/azurite` (`npm install azurite@3`,
Node.js needed), run as `azurite-blob` on 127.0.0.1 with its data under
`$FLEETSTREAM_HOME/data/azurite`. Clients use Azurite's documented
development account: `CONNECTION_STRING` below.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from fleetstream.dev.service import Service, ServiceError, home

AZURITE_VERSION = "3.37.0"
#: Azurite's well-known development account (public, documented by Microsoft)
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


class AzuriteService(Service):
    """`azurite-blob` on 127.0.0.1."""

    name = "azurite"
    start_timeout_s = 30.0
    #: Azurite would wait for every idle keep-alive client before exiting
    stop_timeout_s = 5.0

    def __init__(self, port: int = 10000) -> None:
        super().__init__(port)

    @property
    def install_dir(self) -> Path:
        return home() / "azurite"

    @property
    def executable(self) -> Path:
        return self.install_dir / "node_modules" / ".bin" / "azurite-blob"

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};"
                f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.account_url};")

    def install(self) -> None:
        if self.executable.exists():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise ServiceError("azurite: npm not found; install Node.js (apt-get install nodejs npm)")
        self.install_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix",
                               str(self.install_dir), f"azurite@{AZURITE_VERSION}"],
                              capture_output=True, text=True)
        if done.returncode != 0 or not self.executable.exists():
            raise ServiceError(f"azurite: npm install failed:\n{done.stderr[-2000:]}")

    def command(self) -> list[str]:
        return [str(self.executable), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "-l", str(self.data_dir), "--skipApiVersionCheck"]
