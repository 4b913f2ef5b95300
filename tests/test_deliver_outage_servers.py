"""Every sink's server down for 60 s under a running streaming job (DirectRunner, wall-clock
time; issue #19).

One application per sink type, each writing to a server of the test's own — a Mosquitto, a
Kafka broker, a webhook endpoint, a local directory — or to one of the shared moto (S3,
Kinesis), Pub/Sub emulator or Azurite servers, which forget everything when restarted: those
are reached through a TCP `Proxy` of the test's own. All of them go down at the same moment
for 60 s while documents flow at a steady rate: the servers are stopped, the proxies closed,
the file application's directory replaced by a regular file. Beside them a `healthy`
application writes to a directory that stays. After the outage every document of every
application has arrived, each vehicle's in order, a copy only ever with the same bytes (the
same `message_id`), and nothing is dead-lettered. `healthy` receives every document
within HEALTHY_WITHIN_S throughout. The same checks run with one sink down for 10 s at a
time.

Documents come through the local Pub/Sub emulator (a topic of the test's own), which the
DirectRunner reads in real time with processing-time timers (its `PeriodicImpulse`
cannot be combined with timers: "_GroupByKeyOnly was not replaced as expected").
"""
from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import boto3
import orjson
import paho.mqtt.client as mqtt
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from fleetstream.dev.azurite import AzuriteService
from fleetstream.dev.kafka import Kafka
from fleetstream.dev.mosquitto import MosquittoService
from fleetstream.dev.moto import MotoService
from fleetstream.dev.pubsub import PubSubEmulator
from fleetstream.dev.sink_pytest_plugin import sample_batch
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.kafka.topic_reader import read_records
from fleetstream.io.sinks.pubsub import PubSubDeliveryError
from fleetstream.io.sinks.registry import SINKS, application_sink, build_sink
from fleetstream.schemas.delivery import Record
from fleetstream.settings.config import parse_config
from fleetstream.transforms.deliver import Deliver
from fleetstream.transforms.delivery_retry import DEFAULT_RETRY, RetryPolicy
from tests.helpers import free_port

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin", "fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

VINS = ("V0", "V1", "V2", "V3")
TICK_S = 0.1           # one document per application every tick: 10 a second each
HEALTHY = "healthy"
#: the longest a `healthy` document may take from its publishing to its file, outage or not
HEALTHY_WITHIN_S = 5.0
DEAD: list[dict] = []
PROJECT = "fleetstream-test"


@dataclass
class Outage:
    """An application's sink, the server behind it, and what reached that server."""

    sink: dict
    stop: Callable[[], None]
    start: Callable[[], None]
    #: the documents the server holds, as runs whose order is known: each run in the
    #: order the server took its documents (copies included)
    received: Callable[[], list[list[bytes]]]


class PersistentMosquitto(MosquittoService):
    """A broker that keeps its subscribers' sessions and queued messages over a restart."""

    def prepare(self) -> None:
        super().prepare()
        text = self.config_path.read_text().replace(
            "persistence false", f"persistence true\npersistence_location {self.data_dir}/")
        self.config_path.write_text(text)


class SessionSubscriber:
    """A subscriber with a persistent session (QoS 1): it misses nothing over a restart."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="outage-test",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Endpoint:
    """A webhook endpoint on a fixed port that answers 204 and keeps each request's body;
    `stop` closes its socket (connections are refused), `start` opens it again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[bytes] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def documents(self) -> list[bytes]:
        return [orjson.dumps(document) for body in list(self.bodies)
                for document in orjson.loads(body)]


class Proxy:
    """A TCP proxy on a fixed port to a server on `backend_port`; `stop` closes its socket
    and every connection through it (the sink sees refused and reset connections), `start`
    listens again on the same port."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        #: connections accepted so far
        self.accepted = 0

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.accepted += 1
            client.settimeout(None)
            try:
                server = socket.create_connection(("127.0.0.1", self.backend_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        for end in (source, target):
            self._close(end)

    def _close(self, end: socket.socket) -> None:
        with self._lock:
            self._open.discard(end)
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        end.close()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            ends = list(self._open)
        for end in ends:
            self._close(end)


def _mqtt_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    broker = PersistentMosquitto(free_port(), name="mosquitto-outage", root=home)
    broker.start()
    subscriber = SessionSubscriber(broker.port, f"live/fleetstream/{app}/#")
    yield Outage({"type": "mqtt", "host": "127.0.0.1", "port": broker.port,
                  "topic": "live/fleetstream/{application_id}/{vin}", "timeout": 5},
                 broker.stop, broker.start, lambda: [[m.payload for m in subscriber.messages]])
    subscriber.close()
    broker.stop()


def _kafka_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    kafka: Kafka = request.getfixturevalue("private_kafka")
    create_topics(kafka.bootstrap, [Topic(f"fleetstream.{app}", 2)])
    yield Outage({"type": "kafka", "bootstrap": kafka.bootstrap}, kafka.stop, kafka.start,
                 lambda: [[record.value() for record in
                           read_records(kafka.bootstrap, f"fleetstream.{app}", timeout_s=5)]])


def _webhook_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    request.getfixturevalue("monkeypatch").setenv("OUTAGE_WEBHOOK_SECRET", "outage-secret")
    endpoint = Endpoint()
    endpoint.start()
    yield Outage({"type": "webhook", "url": f"http://127.0.0.1:{endpoint.port}/hook",
                  "secret_env": "OUTAGE_WEBHOOK_SECRET", "timeout_s": 5},
                 endpoint.stop, endpoint.start, lambda: [endpoint.documents()])
    endpoint.stop()


def _file_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    """A filesystem's outage: the application's directory moved away and a regular file put
    in its place (a read-only directory would not stop root), then the directory put back."""
    folder, away = home / app, home / f"{app}.away"

    def stop() -> None:
        if folder.exists():
            folder.rename(away)
        folder.write_bytes(b"the directory is away")

    def start() -> None:
        folder.unlink()
        if away.exists():
            away.rename(folder)

    yield Outage({"type": "file", "path": str(folder)}, stop, start,
                 lambda: written_files(folder))


def written_files(folder: Path) -> list[list[bytes]]:
    """One run per file (a batch), in the order they were written."""
    return [path.read_bytes().splitlines()
            for path in sorted(folder.glob("*.jsonl"), key=lambda path: path.stat().st_mtime)]


def _proxied(backend_port: int) -> Proxy:
    proxy = Proxy(backend_port)
    proxy.start()
    return proxy


AWS_TEST_OPTIONS = {"region": "eu-central-1", "access_key_id": "test",
                    "secret_access_key": "test"}


def _aws_client(service: str, moto: MotoService) -> object:
    return boto3.client(service, region_name=AWS_TEST_OPTIONS["region"],
                        endpoint_url=moto.endpoint_url, aws_access_key_id="test",
                        aws_secret_access_key="test")


def _s3_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    moto: MotoService = request.getfixturevalue("moto_service")
    bucket = f"outage-{uuid.uuid4().hex[:12]}"
    s3 = _aws_client("s3", moto)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={
        "LocationConstraint": AWS_TEST_OPTIONS["region"]})
    proxy = _proxied(moto.port)

    def objects() -> list[list[bytes]]:
        # One run per object: object names hold the batch id, a content hash, and moto's
        # LastModified has whole seconds, so the order of objects is unknown; the order
        # within each object and that everything arrives are checked.
        names = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                 for o in page.get("Contents", [])]
        return [s3.get_object(Bucket=bucket, Key=name)["Body"].read().splitlines()
                for name in names]

    yield Outage({"type": "s3", "bucket": bucket, "gzip": False,
                  "endpoint_url": f"http://127.0.0.1:{proxy.port}", **AWS_TEST_OPTIONS},
                 proxy.stop, proxy.start, objects)
    proxy.stop()


def _azure_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    from azure.storage.blob import ContainerClient
    azurite: AzuriteService = request.getfixturevalue("azurite_service")
    name = f"outage-{uuid.uuid4().hex[:12]}"
    container = ContainerClient.from_connection_string(azurite.connection_string, name)
    container.create_container()
    proxy = _proxied(azurite.port)
    through_proxy = azurite.connection_string.replace(
        azurite.account_url, azurite.account_url.replace(str(azurite.port), str(proxy.port)))

    def blobs() -> list[list[bytes]]:
        # one run per blob, as for S3: blob names hold no order (a content hash)
        return [container.download_blob(blob.name).readall().splitlines()
                for blob in container.list_blobs()]

    yield Outage({"type": "azure_blob", "container": name, "gzip": False,
                  "connection_string": through_proxy}, proxy.stop, proxy.start, blobs)
    proxy.stop()
    container.delete_container()
    container.close()


def _kinesis_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    moto: MotoService = request.getfixturevalue("moto_service")
    stream = f"outage-{uuid.uuid4().hex[:12]}"
    kinesis = _aws_client("kinesis", moto)
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    proxy = _proxied(moto.port)

    def shards() -> list[list[bytes]]:
        """Every shard's records in sequence order, one shard after the other: a vehicle's
        records are all on one shard (partition key = VIN), so this is one run."""
        records: list[bytes] = []
        for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
                records += [record["Data"] for record in page["Records"]]
                iterator = page.get("NextShardIterator") if page["Records"] else None
        return [records]

    yield Outage({"type": "kinesis", "stream": stream,
                  "endpoint_url": f"http://127.0.0.1:{proxy.port}", **AWS_TEST_OPTIONS},
                 proxy.stop, proxy.start, shards)
    proxy.stop()
    kinesis.delete_stream(StreamName=stream)


def _pubsub_outage(request: pytest.FixtureRequest, home: Path, app: str) -> Iterator[Outage]:
    from google.cloud import pubsub_v1
    emulator: PubSubEmulator = request.getfixturevalue("pubsub_service")
    request.getfixturevalue("monkeypatch").setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    topic_id = f"outage-{app.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, topic_id)
    subscription = subscriber.subscription_path(PROJECT, topic_id)
    publisher.create_topic(name=topic)
    subscriber.create_subscription(request={"name": subscription, "topic": topic,
                                            "enable_message_ordering": True})
    proxy = _proxied(emulator.port)
    pulled: list[bytes] = []

    def messages() -> list[list[bytes]]:
        """What the ordered subscription delivered so far (acknowledged), in delivery order:
        a vehicle's messages (ordering key = VIN) come in publishing order."""
        while received := subscriber.pull(subscription=subscription, max_messages=500,
                                          timeout=5).received_messages:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in received])
            pulled.extend(m.message.data for m in received)
        return [pulled]

    yield Outage({"type": "pubsub", "project": PROJECT, "topic": topic_id,
                  "emulator_host": f"127.0.0.1:{proxy.port}"}, proxy.stop, proxy.start, messages)
    proxy.stop()
    subscriber.delete_subscription(subscription=subscription)
    publisher.delete_topic(topic=topic)


#: each sink type's outage, as a context (`contextlib.contextmanager`) of (request, home, app)
OUTAGES = {"file": _file_outage, "mqtt": _mqtt_outage, "kafka": _kafka_outage,
           "webhook": _webhook_outage, "s3": _s3_outage, "azure_blob": _azure_outage,
           "kinesis": _kinesis_outage, "pubsub": _pubsub_outage}


@dataclass(frozen=True)
class Schedule:
    """When the servers go down and come back, and how long documents flow (seconds from
    the first document)."""

    down_at_s: float
    up_at_s: float
    run_s: float

    @property
    def ticks(self) -> int:
        return round(self.run_s / TICK_S)


@dataclass
class Observed:
    """What one run left: each application's server's runs, and `healthy`'s documents."""

    received: dict[str, list[list[bytes]]]
    #: tick -> seconds from its publishing to its file being written
    healthy_waits: dict[int, float]
    #: tick -> the time its file was written
    healthy_written_at: dict[int, float]
    #: the position of each tick in its vehicle's order as `healthy` received them (the
    #: order the job read them in: Pub/Sub does not keep the publishing order)
    position: dict[int, int]
    started: float


def documents(message: bytes, apps: Sequence[str]) -> list[tuple[str, Record]]:
    """The tick's document for each application; a tick is `<number> <send time>`."""
    tick, sent = message.split()
    vin = VINS[int(tick) % len(VINS)]
    received_ms = round(float(sent) * 1000)
    return [(app, Record(vin, f"{app}-{int(tick):04d}", received_ms,
                         orjson.dumps({"message_id": f"{app}-{int(tick):04d}", "app": app,
                                       "tick": int(tick), "vin": vin, "sent": float(sent),
                                       "brand": "tesla"}), received_ms))
            for app in apps]


def feed(publisher, topic: str, ticks: int, started: float) -> None:
    """One tick every TICK_S from `started`."""
    for tick in range(ticks):
        time.sleep(max(0.0, started + tick * TICK_S - time.time()))
        publisher.publish(topic, f"{tick} {time.time()}".encode())


def _keep_dead(letter: dict) -> None:
    DEAD.append(letter)


def outage(of: Iterable[Outage], started: float, schedule: Schedule) -> None:
    """Every server down at `down_at_s`, back at `up_at_s`."""
    time.sleep(max(0.0, started + schedule.down_at_s - time.time()))
    for server in of:
        server.stop()
    time.sleep(max(0.0, started + schedule.up_at_s - time.time()))
    for server in of:
        server.start()


def everything_arrived(outages: Mapping[str, Outage], ticks: int, timeout_s: float) -> None:
    """Wait until each application's server holds a document of every tick (or the timeout)."""
    waiting = dict(outages)
    deadline = time.monotonic() + timeout_s
    while waiting and time.monotonic() < deadline:
        for app, of in list(waiting.items()):
            if len({document for run in of.received() for document in run}) >= ticks:
                del waiting[app]
        time.sleep(0.5)


def run_outage(outages: Mapping[str, Outage], healthy: Path, retry: RetryPolicy,
               schedule: Schedule, pubsub_service, monkeypatch: pytest.MonkeyPatch) -> Observed:
    """Stream documents to `outages`' applications and a `healthy` file application in
    `healthy`, with the servers down as `schedule` says; what arrived once every application
    has every document (or a retry's longest wait after the servers came back)."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_service.host)
    from google.cloud import pubsub_v1
    DEAD.clear()
    run = uuid.uuid4().hex[:8]
    publisher, subscriptions = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, f"outage-{run}")
    publisher.create_topic(name=topic)
    source = subscriptions.subscription_path(PROJECT, f"outage-{run}")
    subscriptions.create_subscription(name=source, topic=topic)
    sinks = {HEALTHY: {"type": "file", "path": str(healthy)},
             **{app: of.sink for app, of in outages.items()}}
    apps = parse_config({"applications": [
        {"id": app, "permissions": ["diagnostics.*"], "sink": {**sink, "max_delay": 0.2}}
        for app, sink in sinks.items()]}).applications
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | beam.io.ReadFromPubSub(subscription=source)
         | beam.FlatMap(documents, apps=tuple(sinks))
         | Deliver(apps, application_sink, retry, shards=2)
         | beam.Map(_keep_dead))
    result = pipeline.run()
    started = time.time() + 3          # the DirectRunner takes a few seconds to start
    stopper = threading.Thread(target=outage, args=(outages.values(), started, schedule),
                               daemon=True)
    stopper.start()
    try:
        feed(publisher, topic, schedule.ticks, started)
        stopper.join()
        everything_arrived(outages, schedule.ticks, timeout_s=retry.max_backoff_s + 60)
        time.sleep(1)                   # healthy's last batch
    finally:
        result.cancel()
        subscriptions.delete_subscription(subscription=source)
        publisher.delete_topic(topic=topic)
    waits, written_at, order = {}, {}, defaultdict(list)
    for path in sorted(healthy.glob("*.jsonl"), key=os.path.getmtime):
        for line in path.read_bytes().splitlines():
            document = orjson.loads(line)
            written_at[document["tick"]] = path.stat().st_mtime
            waits[document["tick"]] = written_at[document["tick"]] - document["sent"]
            order[document["vin"]].append(document["tick"])
    return Observed({app: of.received() for app, of in outages.items()}, waits, written_at,
                    {tick: index for ticks_of_vin in order.values()
                     for index, tick in enumerate(ticks_of_vin)}, started)


def delivery_problems(runs: list[list[bytes]], ticks: int,
                      position: Mapping[int, int]) -> list[str]:
    """What is wrong with what one application's server holds: a tick missing, a vehicle's
    documents out of the order the job read them in (`position`) within a run of known
    order, or two versions of one `message_id`."""
    received = [document for run in runs for document in run]
    payloads = [orjson.loads(document) for document in received]
    problems = []
    missing = set(range(ticks)) - {p["tick"] for p in payloads}
    if missing:
        problems.append(f"{len(missing)} of {ticks} documents missing, first {min(missing)}")
    for run in runs:
        first_seen: dict[str, list[int]] = defaultdict(list)
        for p in map(orjson.loads, run):
            if p["tick"] not in first_seen[p["vin"]]:
                first_seen[p["vin"]].append(p["tick"])
        problems += [f"{vin} out of order" for vin, seen in first_seen.items()
                     if seen != sorted(seen, key=position.__getitem__)]
    versions: dict[str, set[bytes]] = defaultdict(set)
    for document, p in zip(received, payloads):
        versions[p["message_id"]].add(document)
    if any(len(v) > 1 for v in versions.values()):
        problems.append("a message_id with different bytes")
    return problems


def assert_every_document_delivered(observed: Observed, ticks: int) -> None:
    """Nothing dead-lettered; `healthy` and every application that was down hold every
    document, each vehicle's in order, copies identical."""
    assert DEAD == []
    assert sorted(observed.healthy_waits) == list(range(ticks))
    problems = {app: delivery_problems(runs, ticks, observed.position)
                for app, runs in observed.received.items()}
    assert {app: p for app, p in problems.items() if p} == {}
    for app, runs in observed.received.items():
        print(f"{app}: {ticks} documents, {sum(map(len, runs)) - ticks} copies")


#: every sink down at once, for 60 s, with Deliver's default policy for every sink (the
#: webhook's own schedule would retry 5 min after its first retry:
#: test_every_sink_has_an_outage_and_no_default_policy_gives_up_on_a_60_s_one)
ALL_DOWN = Schedule(down_at_s=10.0, up_at_s=70.0, run_s=85.0)


def test_every_sink_down_for_60_s_holds_only_its_own_application(
        request: pytest.FixtureRequest, pubsub_service, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with contextlib.ExitStack() as servers:
        outages = {app: servers.enter_context(contextlib.contextmanager(of)(
            request, tmp_path / "home", app)) for app, of in OUTAGES.items()}
        observed = run_outage(outages, tmp_path / HEALTHY, DEFAULT_RETRY, ALL_DOWN,
                              pubsub_service, monkeypatch)
    assert_every_document_delivered(observed, ALL_DOWN.ticks)
    # healthy: every document written within HEALTHY_WITHIN_S of its publishing, all along
    waits = observed.healthy_waits
    in_outage = [tick for tick in waits if ALL_DOWN.down_at_s <= tick * TICK_S < ALL_DOWN.up_at_s]
    print(f"healthy: max wait {max(waits.values()):.2f} s, during the outage "
          f"{max(waits[t] for t in in_outage):.2f} s ({len(in_outage)} documents)")
    late = {tick: round(wait, 1) for tick, wait in sorted(waits.items())
            if wait > HEALTHY_WITHIN_S}
    assert not late, (f"{len(late)} healthy documents waited longer than {HEALTHY_WITHIN_S} s, "
                      f"up to {max(late.values())} s (tick: seconds): {late}")


#: one sink down for 10 s beside `healthy`, with a short retry policy
ONE_DOWN = Schedule(down_at_s=5.0, up_at_s=15.0, run_s=26.0)
SHORT_RETRY = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=2, max_elapsed_s=120)


@pytest.mark.parametrize("kind", list(OUTAGES))
def test_one_stopped_sink_server_holds_only_its_own_application(
        kind: str, request: pytest.FixtureRequest, pubsub_service, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with contextlib.contextmanager(OUTAGES[kind])(request, tmp_path / "home", kind) as of:
        observed = run_outage({kind: of}, tmp_path / HEALTHY, SHORT_RETRY, ONE_DOWN,
                              pubsub_service, monkeypatch)
    assert_every_document_delivered(observed, ONE_DOWN.ticks)
    # healthy: the documents sent in the outage's first half were written during it (the
    # second half is left to the job's own latency, seconds when the machine is busy)
    up = observed.started + ONE_DOWN.up_at_s
    half = (ONE_DOWN.down_at_s + ONE_DOWN.up_at_s) / 2
    in_outage = [tick for tick in observed.healthy_waits
                 if ONE_DOWN.down_at_s <= tick * TICK_S < half]
    late = [tick for tick in in_outage if observed.healthy_written_at[tick] >= up]
    assert late == [], f"{len(late)} of {len(in_outage)} healthy documents waited for the outage"
    print(f"healthy: max wait {max(observed.healthy_waits[t] for t in in_outage):.2f} s "
          f"during the outage")


def test_every_sink_has_an_outage_and_no_default_policy_gives_up_on_a_60_s_one() -> None:
    """The 60 s outage covers every sink type, and each sink's own retry policy (or
    Deliver's default) still has a retry due after 60 s, even with every wait at its
    longest (no jitter)."""
    assert set(OUTAGES) == set(SINKS)
    for sink in SINKS.values():
        policy = dataclasses.replace(sink.RETRY or DEFAULT_RETRY, jitter=0.0)
        elapsed, attempt = 0.0, 1
        while elapsed <= 60.0:
            wait = policy.backoff_s(attempt)
            assert not policy.gives_up(attempt, elapsed, wait), (sink.TYPE, attempt, elapsed)
            elapsed += wait
            attempt += 1


def _unreachable_sink(of: str, port: int) -> dict:
    """A `sink:` section of type `of` whose server would be on 127.0.0.1:`port`."""
    endpoint = {"endpoint_url": f"http://127.0.0.1:{port}", **AWS_TEST_OPTIONS}
    return {"s3": {"type": "s3", "bucket": "away", **endpoint},
            "kinesis": {"type": "kinesis", "stream": "away", **endpoint},
            "azure_blob": {"type": "azure_blob", "container": "away",
                           "connection_string": AzuriteService(port).connection_string},
            "pubsub": {"type": "pubsub", "project": PROJECT, "topic": "away",
                       "emulator_host": f"127.0.0.1:{port}"}}[of]


#: connections of one attempt against a server that closes them: botocore opens a second
#: one whatever its retries (measured: 2, 3, 4 connections for max_attempts 1, 2, 3)
CONNECTIONS_PER_ATTEMPT = {"s3": 2, "kinesis": 2, "azure_blob": 1}


@pytest.mark.parametrize("of", list(CONNECTIONS_PER_ATTEMPT))
def test_a_write_whose_server_drops_the_connection_is_tried_once(of: str) -> None:
    """No retry inside the call: Deliver retries the batch on its timer, while the
    client's own retries (and their backoff) would hold the bundle's other applications."""
    proxy = _proxied(free_port())       # accepts, then closes: its backend is down
    sink, _ = build_sink("fleet-a", _unreachable_sink(of, proxy.port))
    try:
        with pytest.raises(Exception):  # noqa: B017 - each client has its own error type
            sink.write(sample_batch())
    finally:
        sink.close()
        proxy.stop()
    assert proxy.accepted == CONNECTIONS_PER_ATTEMPT[of]


def test_a_pubsub_write_whose_server_drops_the_connection_fails_instead_of_waiting() -> None:
    """Each publish is tried once: the write fails with every vehicle failed, none late
    (the client's own retries kept the publishes pending until the write's timeout)."""
    proxy = _proxied(free_port())
    sink, _ = build_sink("fleet-a", _unreachable_sink("pubsub", proxy.port))
    try:
        with pytest.raises(PubSubDeliveryError, match=r": 0 message\(s\) .* and 2 vehicle"):
            sink.write(sample_batch())
    finally:
        sink.close()
        proxy.stop()
