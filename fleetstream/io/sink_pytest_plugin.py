"""Pytest fixtures that give sink tests real local servers.

Load with `pytest_plugins = ["fleetstream.io.sink_pytest_plugin"]`. Each
fixture is session-scoped: it starts its service (`fleetstream.local`) on the
default port unless it already runs, yields it, and stops it at the end only
if it started it. State goes under `$FLEETSTREAM_HOME` as for `fleetstream dev`.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from fleetstream.local.azurite import AzuriteService
from fleetstream.local.mosquitto import MosquittoService
from fleetstream.local.moto import MotoService
from fleetstream.local.service import Service


def running_service(service: Service) -> Iterator[Service]:
    """Yield `service` started; stop it afterwards only if this call started it."""
    started_here = not service.running()
    if started_here:
        service.start()
    try:
        yield service
    finally:
        if started_here:
            service.stop()


@pytest.fixture(scope="session")
def mosquitto_service() -> Iterator[MosquittoService]:
    """An anonymous Mosquitto broker on 127.0.0.1:1883."""
    yield from running_service(MosquittoService())


@pytest.fixture(scope="session")
def moto_service() -> Iterator[MotoService]:
    """moto_server (S3, Kinesis) on 127.0.0.1:5000."""
    yield from running_service(MotoService())


@pytest.fixture(scope="session")
def azurite_service() -> Iterator[AzuriteService]:
    """Azurite blob storage on 127.0.0.1:10000."""
    yield from running_service(AzuriteService())
