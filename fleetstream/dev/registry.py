"""The one place that lists the local services `fleetstream dev` knows.

Adding one: write `fleetstream/dev/<name>.py` with a `Service` subclass and
add a factory (name -> service with its default port) below.
"""
from __future__ import annotations

from typing import Callable, Mapping

from fleetstream.dev.alertmanager import AlertmanagerService
from fleetstream.dev.azurite import AzuriteService
from fleetstream.dev.expansion import ExpansionService
from fleetstream.dev.flink import FlinkJobManager, FlinkTaskManager
from fleetstream.dev.jobserver import FlinkJobServer
from fleetstream.dev.kafka import Kafka
from fleetstream.dev.mosquitto import MosquittoService
from fleetstream.dev.moto import MotoService
from fleetstream.dev.rabbitmq import RabbitMQService
from fleetstream.dev.redis import RedisService
from fleetstream.dev.prometheus import PrometheusService
from fleetstream.dev.pubsub import PubSubEmulator
from fleetstream.dev.service import Service
from fleetstream.dev.workerpool import WorkerPool

#: name -> factory returning the service on its default port
SERVICES: Mapping[str, Callable[[], Service]] = {
    "mosquitto": MosquittoService,
    "moto": MotoService,
    "rabbitmq": RabbitMQService,
    "redis": RedisService,
    "azurite": AzuriteService,
    "pubsub": PubSubEmulator,
    # listed in start order: the Flink TaskManager joins the JobManager
    "kafka": Kafka,
    "flink-jm": FlinkJobManager,
    "flink-tm": FlinkTaskManager,
    "jobserver": FlinkJobServer,
    "expansion": ExpansionService,
    "workerpool": WorkerPool,
    # after Flink: Prometheus scrapes its reporters, and sends alerts to Alertmanager
    "alertmanager": AlertmanagerService,
    "prometheus": PrometheusService,
}
