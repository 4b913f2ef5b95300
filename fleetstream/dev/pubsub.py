"""A local Google Pub/Sub emulator: the Go fake `pstest` behind a port.

`cloud.google.com/go/pubsub/v2/pstest` is the in-process fake server of Google's Go
client; a tiny `main` (MAIN_GO) starts it on 127.0.0.1:<port> and blocks. The service
writes that `main.go` and a `go.mod` under `$FLEETSTREAM_HOME/go/pubsub-emulator/` and
builds it once with the machine's `go` (`go mod tidy`, `go build`, modules through the
environment's GOPROXY; about a minute the first time); later starts reuse the binary
while the sources are unchanged. State is in memory: a restart forgets every topic.

Python clients reach it with `PUBSUB_EMULATOR_HOST=127.0.0.1:8085` in their environment
(`PubSubEmulator.environ()`), or the Pub/Sub bridge's `emulator_host` option.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fleetstream.dev.service import Service, ServiceError, home

#: the pstest module; v2.9.0 builds with Go 1.26
PUBSUB_MODULE = "cloud.google.com/go/pubsub/v2"
PUBSUB_VERSION = "v2.9.0"

MAIN_GO = """\
// The Pub/Sub emulator of `fleetstream dev`: pstest, Google's fake, on a port.
package main

import (
\t"flag"
\t"log"

\t"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
\tport := flag.Int("port", 8085, "port to serve gRPC on (127.0.0.1)")
\tflag.Parse()
\tserver := pstest.NewServerWithPort(*port)
\tlog.Printf("pstest serving on %s", server.Addr)
\tselect {}
}
"""

GO_MOD = f"""\
module fleetstream.local/pubsub-emulator

go 1.26

require {PUBSUB_MODULE} {PUBSUB_VERSION}
"""


def emulator_binary() -> Path:
    """The built emulator, built first when missing or its sources changed."""
    folder = home() / "go" / "pubsub-emulator"
    binary = folder / "pubsub-emulator"
    done = folder / "built-from.txt"
    wanted = MAIN_GO + GO_MOD
    if binary.exists() and done.exists() and done.read_text() == wanted:
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go"
                                if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ServiceError("pubsub: `go` was not found; install Go 1.26 to build the "
                           "Pub/Sub emulator")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.go").write_text(MAIN_GO)
    (folder / "go.mod").write_text(GO_MOD)
    for step in ([go, "mod", "tidy"], [go, "build", "-o", str(binary), "."]):
        result = subprocess.run(step, cwd=folder, capture_output=True, text=True, check=False,
                                env={**os.environ, "GOFLAGS": "-buildvcs=false"})
        if result.returncode != 0:
            raise ServiceError(f"pubsub: `{' '.join(step)}` failed in {folder}:\n"
                               f"{(result.stdout + result.stderr)[-2000:]}")
    done.write_text(wanted)
    return binary


class PubSubEmulator(Service):
    """pstest on 127.0.0.1:8085; ready when the port accepts connections (gRPC)."""

    name = "pubsub"
    start_timeout_s = 30.0

    def __init__(self, port: int = 8085) -> None:
        super().__init__(port)

    @property
    def host(self) -> str:
        """HOST:PORT, the value of PUBSUB_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    def environ(self) -> dict[str, str]:
        """What a Python Pub/Sub client needs in its environment to use this emulator."""
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def install(self) -> None:
        emulator_binary()

    def command(self) -> list[str]:
        return [str(emulator_binary()), "-port", str(self.port)]
