"""The file sink when its filesystem fails: the write raises a retryable error and no file
of a batch's name is ever half-written (a real directory swapped for a regular file, a real
file-size limit)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetstream.dev.sink_pytest_plugin import sample_batch
from fleetstream.io.sinks.registry import build_sink
from fleetstream.schemas.errors import PermanentWriteError

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]


def test_a_batch_is_one_whole_file_named_by_its_content(tmp_path: Path) -> None:
    sink, _ = build_sink("fleet-a", {"type": "file", "path": str(tmp_path / "out")})
    batch = sample_batch()
    sink.write(batch)
    sink.write(batch)        # a retried batch replaces its own file
    files = list((tmp_path / "out").iterdir())
    assert [f.name for f in files] == [sink.layout.name(batch)]
    assert files[0].read_bytes() == batch.jsonl()


def test_a_directory_replaced_by_a_file_fails_the_write_retryably_until_restored(
        tmp_path: Path) -> None:
    """The outage of tests/test_deliver_outage_servers.py: the application's directory is
    moved away and a regular file takes its place (permissions do not stop root)."""
    folder = tmp_path / "fleet-a"
    sink, _ = build_sink("fleet-a", {"type": "file", "path": str(folder)})
    before, during = sample_batch(vins=("VIN0001",)), sample_batch(vins=("VIN0002",))
    sink.write(before)
    folder.rename(tmp_path / "away")
    folder.write_bytes(b"not a directory")

    with pytest.raises(OSError) as failure:
        sink.write(during)
    assert not isinstance(failure.value, PermanentWriteError)    # Deliver retries it
    assert folder.read_bytes() == b"not a directory"

    folder.unlink()
    (tmp_path / "away").rename(folder)
    assert [f.name for f in folder.iterdir()] == [sink.layout.name(before)]   # no leftovers
    sink.write(during)
    assert (folder / sink.layout.name(during)).read_bytes() == during.jsonl()
    assert len(list(folder.iterdir())) == 2


#: writes one 128 KB batch into argv[1] with files limited to 16 KB (RLIMIT_FSIZE), so the
#: write fails part-way with EFBIG; prints the error's errno
_WRITE_PAST_A_SIZE_LIMIT = """
import resource, signal, sys
from fleetstream.dev.sink_pytest_plugin import sample_batch
from fleetstream.io.sinks.registry import build_sink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
sink, _ = build_sink("fleet-a", {"type": "file", "path": sys.argv[1]})
batch = sample_batch(per_vehicle=4, data_bytes=16_000)
assert len(batch.jsonl()) > 4 * 16_384
resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    sink.write(batch)
except OSError as error:
    print(error.errno)
"""


def test_a_write_that_fails_part_way_leaves_no_file(tmp_path: Path) -> None:
    """A disk that fills during the write (here a real file-size limit) fails it with an
    OSError and leaves neither a truncated batch file nor a temporary one."""
    folder = tmp_path / "fleet-a"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", _WRITE_PAST_A_SIZE_LIMIT, str(folder)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["27"]        # EFBIG: the write failed part-way
    assert list(folder.iterdir()) == []
