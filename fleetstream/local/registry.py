"""The one place that lists the local services `fleetstream dev` knows.

Adding one: write `fleetstream/local/<name>.py` with a `Service` subclass and
add a factory (name -> service with its default port) below.
"""
from __future__ import annotations

from typing import Callable, Mapping

from fleetstream.local.azurite import AzuriteService
from fleetstream.local.expansion import ExpansionService
from fleetstream.local.flink import FlinkJobManager, FlinkTaskManager
from fleetstream.local.jobserver import FlinkJobServer
from fleetstream.local.kafka import Kafka
from fleetstream.local.mosquitto import MosquittoService
from fleetstream.local.moto import MotoService
from fleetstream.local.service import Service
from fleetstream.local.workerpool import WorkerPool

#: name -> factory returning the service on its default port
SERVICES: Mapping[str, Callable[[], Service]] = {
    "mosquitto": MosquittoService,
    "moto": MotoService,
    "azurite": AzuriteService,
    # listed in start order: the Flink TaskManager joins the JobManager
    "kafka": Kafka,
    "flink-jm": FlinkJobManager,
    "flink-tm": FlinkTaskManager,
    "jobserver": FlinkJobServer,
    "expansion": ExpansionService,
    "workerpool": WorkerPool,
}
