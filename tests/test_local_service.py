"""The local service machinery (`fleetstream.dev.service`) with a stand-in server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetstream.dev.service import LOG_ROTATE_BYTES, Service, process_start_time
from tests.helpers import free_port


class _Sleeper(Service):
    """A 'server' that only sleeps; ready as soon as its process runs."""

    name = "sleeper"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]

    def ready(self) -> bool:
        return self.pid() is not None


@pytest.mark.parametrize("size, rotated", [(LOG_ROTATE_BYTES + 1, True), (1000, False)])
def test_a_start_moves_a_large_log_aside_and_keeps_a_small_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, rotated: bool) -> None:
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path))
    service = _Sleeper(free_port())
    service.log_path.parent.mkdir(parents=True)
    (service.log_path.parent / "sleeper.log.1").write_text("the older log\n")
    with open(service.log_path, "wb") as log:   # sparse: no disk for the size
        log.truncate(size)
    service.start()
    try:
        old = service.log_path.parent / "sleeper.log.1"
        assert old.stat().st_size == (size if rotated else len("the older log\n"))
        assert service.log_path.stat().st_size == (0 if rotated else size)
    finally:
        service.stop()


@pytest.mark.parametrize("record", ["{pid}", "{pid} {other_start}"],
                         ids=["pid-alone", "pid-with-another-start-time"])
def test_a_pid_file_whose_pid_went_to_another_process_names_no_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_process: subprocess.Popen,
        record: str) -> None:
    """As on a machine restored from a copy of the home folder, or after a reboot: the pid
    in the file now belongs to some other process. That process is not taken for the server
    (which a start would wait on in vain), and no stop signals it."""
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path))
    service = _Sleeper(free_port())
    service.pid_path.parent.mkdir(parents=True)
    service.pid_path.write_text(record.format(
        pid=live_process.pid, other_start=process_start_time(live_process.pid) - 1))
    assert service.pid() is None
    service.stop()
    assert live_process.poll() is None
    service.start()
    try:
        assert service.pid() not in (None, live_process.pid)
    finally:
        service.stop()
    assert live_process.poll() is None and service.pid() is None
