"""A test session never stops a local server that another live session still uses
(`fleetstream.dev.leases` and the session fixtures' `_started`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetstream.dev.leases import Lease
from fleetstream.dev.pytest_plugin import _started
from tests.helpers import free_port
from tests.test_local_service import _Sleeper


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path))
    return tmp_path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_live_other_holders_count(home: Path, live_process: subprocess.Popen) -> None:
    pid_path = home / "run" / "sleeper.pid"
    mine, theirs, dead = Lease(pid_path), Lease(pid_path, live_process.pid), \
        Lease(pid_path, _dead_pid())
    for lease in (mine, theirs, dead):
        lease.take()
    assert mine.others() == [live_process.pid]
    assert not (mine.folder / str(dead.pid)).exists()   # a dead holder's lease is removed
    theirs.give_back()
    assert mine.others() == []


def test_a_lease_whose_pid_went_to_another_process_counts_for_nothing(
        home: Path, live_process: subprocess.Popen) -> None:
    """The pid of a session that left a lease behind now belongs to an unrelated process
    (a reboot, a machine restored from a copy): the lease is not taken for that process's."""
    pid_path = home / "run" / "sleeper.pid"
    mine = Lease(pid_path)
    mine.take()
    stale = mine.folder / str(live_process.pid)
    for record in (b"", f"{live_process.pid} 1".encode()):   # as old leases were; then forged
        stale.write_bytes(record)
        assert mine.others() == []
        assert not stale.exists()


def test_a_server_this_session_started_stops_at_its_end(home: Path) -> None:
    service = _Sleeper(free_port())
    with _started([service]):
        assert service.running()
    assert service.pid() is None


def test_a_server_another_live_session_uses_is_left_running(
        home: Path, live_process: subprocess.Popen) -> None:
    service = _Sleeper(free_port())
    try:
        with _started([service]):
            Lease(service.pid_path, live_process.pid).take()   # the other session joins
        assert service.running()
    finally:
        service.stop()


def test_a_server_that_was_still_starting_is_not_taken_as_ours(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _Sleeper(free_port())
    service.start()                        # started elsewhere (`dev up`) ...
    try:
        readiness = iter([False])          # ... and not ready yet when the session looks
        monkeypatch.setattr(service, "ready", lambda: next(readiness, True))
        with _started([service]):
            pass
        assert service.pid() is not None
    finally:
        service.stop()


def test_a_server_already_running_is_left_running(home: Path) -> None:
    service = _Sleeper(free_port())
    service.start()
    try:
        with _started([service]):
            pass
        assert service.running()
    finally:
        service.stop()
