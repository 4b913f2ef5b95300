"""Pytest fixtures that point tests at the real local servers.

Load with `pytest_plugins = ["fleetstream.dev.pytest_plugin"]`. Each
fixture is session-scoped: it starts what is not running yet, and at the end
of the session stops only what it started and no other live test session still uses
(servers left running by `fleetstream dev up` stay up; see `dev.leases`).

* `kafka_service`: a ready `Kafka` (`.bootstrap` is "127.0.0.1:9092").
* `private_kafka`: a broker of the test's own on free ports, for a test that stops or
  restarts Kafka: every other test keeps meeting the shared broker up and ready.
* `redis_service`: a ready `RedisService` (`.url` is "redis://127.0.0.1:6379/0").
* `flink_cluster`: a `LocalFlink` once the Flink cluster, the Beam job server,
  the SDK worker pool and the Kafka expansion service are ready.

`FLEETSTREAM_PORT_OFFSET=N` moves the `flink_cluster` servers' ports up by N (REST
8081+N, job server 8099+N, worker pool 50000+N, ...), for a second stack beside
the default one (with its own `FLEETSTREAM_HOME`); only tests that take the
addresses from `LocalFlink` (`flink_rest` included) follow it.
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
from fleetstream.dev.leases import Lease
from fleetstream.dev.redis import RedisService
from fleetstream.dev.service import Service, free_port
from fleetstream.dev.workerpool import WorkerPool


@dataclass(frozen=True)
class LocalFlink:
    """Where a portable pipeline goes, and the python (same apache-beam) that submits it."""

    job_endpoint: str
    worker_pool: str
    expansion_service: str
    python: Path
    #: the Flink cluster's REST API (flink_jobs' `rest`)
    flink_rest: str = "http://127.0.0.1:8081"

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
    """Start the services that are not running; afterwards stop those, last first, unless
    another live process (another test session) holds a lease on them (`dev.leases`).

    A service whose process exists but is not ready yet (`dev up` still starting it) is
    waited for, not taken as ours."""
    ours: list[tuple[Service, Lease]] = []
    leases = [Lease(service.pid_path) for service in services]
    try:
        for service, lease in zip(services, leases):
            lease.take()
            if not service.running():
                starting = service.pid() is not None
                service.start()
                if not starting:
                    ours.append((service, lease))
        yield
    finally:
        for lease in leases:
            lease.give_back()
        for service, lease in reversed(ours):
            if not lease.others():
                service.stop()


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[Kafka]:
    """A single-node Kafka on 127.0.0.1:9092."""
    kafka = Kafka()
    with _started([kafka]):
        yield kafka


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """A fresh single-node Kafka of the test's own (free ports, data in a temporary folder,
    the jars shared); stopped after the test."""
    kafka = Kafka(port=free_port(), controller_port=free_port(),
                  root=tmp_path_factory.mktemp("private-kafka"))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisService]:
    """A Redis server on 127.0.0.1:6379, the latest-state store (`.url` for clients)."""
    redis = RedisService()
    with _started([redis]):
        yield redis


@pytest.fixture(scope="session")
def flink_cluster() -> Iterator[LocalFlink]:
    """Flink (JobManager + TaskManager), Beam job server, worker pool, expansion service."""
    offset = int(os.environ.get("FLEETSTREAM_PORT_OFFSET", "0"))
    jobmanager = FlinkJobManager(8081 + offset, 6123 + offset)
    jobserver = FlinkJobServer(8099 + offset, 8098 + offset, 8097 + offset, jobmanager.port)
    pool, expansion = WorkerPool(50000 + offset), ExpansionService(8088 + offset)
    services = [jobmanager, FlinkTaskManager(6122 + offset, jobmanager.port), jobserver, pool,
                expansion]
    with _started(services):
        yield LocalFlink(job_endpoint=f"localhost:{jobserver.port}",
                         worker_pool=f"localhost:{pool.port}",
                         expansion_service=f"localhost:{expansion.port}", python=beam_python(),
                         flink_rest=f"http://127.0.0.1:{jobmanager.port}")
