"""Fixtures shared by the replay tests."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import orjson
import pytest
import yaml

from fleetstream.simulator import activations, simulate, write_envelopes

#: the applications of the archive's configuration
APPS = ("fleet", "insurer")
VEHICLES = 24


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated envelopes (with trouble and duplicates) plus bad lines, and a configuration."""
    folder = tmp_path_factory.mktemp("archive")
    write_envelopes(folder / "raw-1.jsonl.gz", simulate(
        VEHICLES, duration_s=300, rate=0.2, seed=3, error_rate=0.05, duplicate_rate=0.01))
    with open(folder / "raw-2.jsonl", "wb") as extra:
        extra.write(b'this is not json\n\n')
        extra.write(orjson.dumps({"source": "volvo", "received_at": "2026-03-01T08:00:00Z",
                                  "payload": "{}"}) + b"\n")
        extra.write(orjson.dumps({"source": "tesla", "received_at": "2026-03-01T08:00:00Z"}) + b"\n")
    with open(folder / "activations.jsonl", "wb") as out:
        for event in activations(VEHICLES, APPS, seed=3):
            out.write(orjson.dumps(event) + b"\n")
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "applications": [
            {"id": "fleet", "permissions": ["diagnostics.*", "charging.*", "vehicle_location.*"],
             "sink": {"type": "file", "path": str(folder / "unused")}},
            {"id": "insurer", "permissions": ["diagnostics.odometer"],
             "sink": {"type": "file", "path": str(folder / "unused")}}],
        "activations": "activations.jsonl"}))
    return folder


@pytest.fixture
def live_process() -> Iterator[subprocess.Popen]:
    """A live process that is no server of ours: another test session, or whichever process
    the kernel gave a stale pid to."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


#: fixtures that start (or reuse) real local servers: a test using one is in the `servers` tier
SERVER_FIXTURES = frozenset({"kafka_service", "private_kafka", "flink_cluster",
                             "mosquitto_service", "moto_service", "azurite_service", "secured_broker",
                             "rabbitmq_service", "pubsub_service", "redis_service",

                             "chromium_driver",
                             "operations_prometheus"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a server fixture `servers`, so that `pytest -m "not servers"`
    (the fast tier) never waits on a server, whoever forgot the marker."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(autouse=True)
def _flink_slots_of_its_own(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the Flink cluster starts with its task slots free and leaves them free, so
    that no test waits on, or reads from, a job another test left running."""
    if "flink_cluster" not in request.fixturenames:
        yield
        return
    rest = request.getfixturevalue("flink_cluster").flink_rest
    cancel_running_jobs(rest)
    yield
    cancel_running_jobs(rest)


def cancel_running_jobs(rest: str) -> None:
    from fleetstream.runtime import flink_jobs
    for job in flink_jobs.running_jobs(rest):
        flink_jobs.cancel_and_wait(job, rest)
