"""Which live processes use a local server, so that one test session never stops a server
another session still uses.

A session that uses a server takes a lease: a file `run/<name>.users/<pid>` holding the pid and
its process's start time (`service.process_record`). When the
session ends it gives the lease back, and stops the server only if it started it itself and
no other live process still holds a lease on it. A lease of a process that has died, or
whose pid the kernel has since given to another process, counts for nothing (it is removed
when next looked at).
"""
from __future__ import annotations

import os
from pathlib import Path

from fleetstream.dev.service import process_record, recorded_process


class Lease:
    """This process's lease on the server whose pid file is `pid_path`."""

    def __init__(self, pid_path: Path, pid: int | None = None) -> None:
        self.folder = pid_path.with_suffix(".users")
        self.pid = os.getpid() if pid is None else pid

    def take(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / str(self.pid)).write_text(process_record(self.pid))

    def give_back(self) -> None:
        (self.folder / str(self.pid)).unlink(missing_ok=True)

    def others(self) -> list[int]:
        """The live processes other than this one that hold a lease; dead ones' leases go."""
        holders = []
        for entry in self.folder.glob("*") if self.folder.is_dir() else ():
            if entry.name == str(self.pid):
                continue
            try:
                pid = recorded_process(entry.read_text())
            except OSError:
                continue
            if pid is not None:
                holders.append(pid)
            else:
                entry.unlink(missing_ok=True)
        return sorted(holders)
