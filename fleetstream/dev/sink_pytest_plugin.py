"""Pytest fixtures that give sink tests real local servers.

Load with `pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]`. Each
fixture is session-scoped: it starts its service (`fleetstream.dev`) on the
default port unless it already runs, yields it, and stops it at the end only
if it started it. State goes under `$FLEETSTREAM_HOME` as for `fleetstream dev`.
Two more fixtures serve sink tests without servers too: `make_batch` builds
a batch of real §4 documents, and `check_object_sink` runs the checks every
object-store sink must pass.
"""
from __future__ import annotations

import gzip
import hashlib
import io
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson
import pytest

from fleetstream.dev.azurite import AzuriteService
from fleetstream.dev.mosquitto import MosquittoService
from fleetstream.dev.moto import MotoService
from fleetstream.dev.rabbitmq import RabbitMQService
from fleetstream.dev.pubsub import PubSubEmulator
from fleetstream.dev.service import Service
from fleetstream.io.sinks.object.format import ObjectSink, read_avro_documents
from fleetstream.schemas.delivery import Batch, Record
from fleetstream.schemas.document import document_json, message_id


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
def rabbitmq_service() -> Iterator[RabbitMQService]:
    """A RabbitMQ node on 127.0.0.1:5672 (login guest/guest), for the `amqp` ingest bridge."""
    yield from running_service(RabbitMQService())


@pytest.fixture(scope="session")
def pubsub_service() -> Iterator[PubSubEmulator]:
    """The Pub/Sub emulator (pstest) on 127.0.0.1:8085; `.host` is PUBSUB_EMULATOR_HOST."""
    yield from running_service(PubSubEmulator())


@pytest.fixture(scope="session")
def azurite_service() -> Iterator[AzuriteService]:
    """Azurite blob storage on 127.0.0.1:10000."""
    yield from running_service(AzuriteService())


@pytest.fixture
def make_batch() -> Callable[..., Batch]:
    """`sample_batch`, as a fixture."""
    return sample_batch


@pytest.fixture(name="check_object_sink")
def check_object_sink_fixture() -> Callable[..., None]:
    """`check_object_sink`, as a fixture."""
    return check_object_sink


def sample_batch(application_id: str = "fleet-a", vins: Sequence[str] = ("VIN0001", "VIN0002"),
                 per_vehicle: int = 2, start_ms: int = 1_772_352_930_500,
                 data_bytes: int = 0) -> Batch:
    """`per_vehicle` odometer documents per vehicle, one second apart, interleaved.

    `data_bytes` > 0 turns each entry into an OEM failure whose description has
    that many characters, to make large documents.
    """
    records = []
    for step in range(per_vehicle):
        for vin in vins:
            at_ms = start_ms + step * 1000
            stamp = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc)
            value = ({"failure": {"reason": "oem_error", "description": "x" * data_bytes}}
                     if data_bytes else {"data": {"value": 1000.0 + step, "unit": "kilometers"}})
            entry = {**value, "timestamp": f"{stamp:%Y-%m-%dT%H:%M:%S}.{at_ms % 1000:03d}Z"}
            msg_id = message_id(f"{vin}/{step}", application_id)
            document = document_json(application_id, vin, "tesla", msg_id,
                                     {"diagnostics": {"odometer": [entry]}})
            records.append(Record(vin, msg_id, at_ms, document))
    batch_id = hashlib.blake2b("".join(r.message_id for r in records).encode(),
                               digest_size=16).hexdigest()
    return Batch(application_id, batch_id, records)


def check_object_sink(make_sink: Callable[[Mapping[str, Any]], ObjectSink],
                      stored: Callable[[], dict[str, bytes]]) -> None:
    """Write through sinks from `make_sink(extra options)` and compare `stored()` objects.

    Checks the default name, that writing a batch twice leaves one object with
    the same bytes, a custom prefix and template, gzip and an Avro round trip.
    """
    batch = sample_batch()
    sink = make_sink({})
    sink.open()
    sink.write(batch)
    first = stored()
    sink.write(batch)
    sink.close()
    assert first == stored() == {f"fleet-a/2026/03/01/08/{batch.batch_id}.jsonl": batch.jsonl()}

    gz_sink = make_sink({"gzip": True, "prefix": "gz", "path_template": "{dd}/{batch_id}"})
    gz_sink.write(batch)
    gz_sink.close()
    assert gzip.decompress(stored()[f"gz/01/{batch.batch_id}.jsonl.gz"]) == batch.jsonl()

    avro_sink = make_sink({"format": "avro", "prefix": "avro"})
    avro_sink.write(batch)
    avro_sink.close()
    body = stored()[f"avro/fleet-a/2026/03/01/08/{batch.batch_id}.avro"]
    assert list(read_avro_documents(io.BytesIO(body))) == [
        orjson.loads(r.document) for r in batch.records]
