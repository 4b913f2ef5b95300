"""Pytest fixtures that point tests at the real local servers.

Load with `pytest_plugins = ["fleetstream.dev.pytest_plugin"]`. Each
fixture is session-scoped: it starts what is not running yet, and at the end
of the session stops only what it started (servers left running by
`fleetstream dev up` stay up).

* `kafka_service`: a ready `Kafka` (`.bootstrap` is "127.0.0.1:9092").
* `flink_cluster`: a `LocalFlink` once the Flink cluster, the Beam job server,
  the SDK worker pool and the Kafka expansion service are ready.
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from fleetstream.dev.beam import beam_python, beam_python_environment
from fleetstream.dev.expansion import ExpansionService
from fleetstream.dev.flink import FlinkJobManager, FlinkTaskManager
from fleetstream.dev.jobserver import FlinkJobServer
from fleetstream.dev.kafka import Kafka
from fleetstream.dev.service import Service
from fleetstream.dev.workerpool import WorkerPool


@dataclass(frozen=True)
class LocalFlink:
    """Where a portable pipeline goes, and the python (same apache-beam) that submits it."""

    job_endpoint: str
    worker_pool: str
    expansion_service: str
    python: Path

    def run_module(self, module: str, args: Sequence[str] = (),
                   timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run `python -m module args` with the job server's apache-beam; fail with its output."""
        result = subprocess.run(
            [str(self.python), "-m", module, *args], capture_output=True, text=True,
            timeout=timeout_s, check=False,
            env={**os.environ, **beam_python_environment()})
        if result.returncode != 0:
            raise AssertionError(f"{module} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result


@contextmanager
def _started(services: Sequence[Service]) -> Iterator[None]:
    """Start the services that are not running; afterwards stop those, last first."""
    ours: list[Service] = []
    try:
        for service in services:
            if not service.running():
                service.start()
                ours.append(service)
        yield
    finally:
        for service in reversed(ours):
            service.stop()


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[Kafka]:
    """A single-node Kafka on 127.0.0.1:9092."""
    kafka = Kafka()
    with _started([kafka]):
        yield kafka


@pytest.fixture(scope="session")
def flink_cluster() -> Iterator[LocalFlink]:
    """Flink (JobManager + TaskManager), Beam job server, worker pool, expansion service."""
    jobserver, pool, expansion = FlinkJobServer(), WorkerPool(), ExpansionService()
    services = [FlinkJobManager(), FlinkTaskManager(), jobserver, pool, expansion]
    with _started(services):
        yield LocalFlink(job_endpoint=f"localhost:{jobserver.port}",
                         worker_pool=f"localhost:{pool.port}",
                         expansion_service=f"localhost:{expansion.port}", python=beam_python())
