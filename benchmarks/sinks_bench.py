"""Sink benchmark: write throughput of each sink, and the batching cost/latency trade-off.

    python benchmarks/sinks_bench.py [--documents 20000] [--repeat 3] [--rates 200 2000]
        [--delays 0 0.1 0.5 1 5 30] [--no-validate] [--sinks webhook pubsub kafka ...]
        [--write docs/benchmarks.md]

1. Throughput. Realistic documents (simulator envelopes, mapped by the real
   mappers, serialised with `document_json` for an application permitted
   everything) are cut into batches exactly as Deliver cuts them in a batch job
   (its own `BatchInBundleFn` with each sink's `DEFAULT_BATCHING`), and each
   sink's `write(batch)` is timed against the real local servers of
   `fleetstream.dev` (mosquitto, the Pub/Sub emulator, Kafka, moto for S3 and
   Kinesis, azurite), started
   here unless they already run; the webhook sink posts to a local aiohttp
   receiver in a child process that checks each request's signature and
   answers 204 (`--sinks` keeps only the targets whose label starts with one
   of its words). Each figure is the best of `--repeat` timed
   passes after one warm-up write, since load on the machine only adds time.

2. Trade-off. Deliver's streaming batcher (`BatchAndWriteFn`: flush at
   `max_records`, at `max_bytes`, or `max_delay` after the batch's first
   document on a processing-time timer; every document at once when
   `max_delay` is 0) is driven directly with in-memory state and timers and a
   simulated clock, over documents arriving evenly at each `--rates` rate. A
   timer fires exactly at its time, before a document arriving at the same
   time. Reported per 10,000 documents: sink writes, and the mean and p99 time
   a document waits in its batch until the flush (the write itself excluded).

3. Validation (unless `--no-validate`): one point of (2) is run through the real
   `Deliver` in a streaming TestStream pipeline on the DirectRunner, whose test
   clock drives both Deliver's timers and a recording sink, and compared.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import orjson
from apache_beam.transforms.window import GlobalWindow

from fleetstream.dev.registry import SERVICES
from fleetstream.dev.service import Service
from fleetstream.dev.sink_pytest_plugin import running_service
from fleetstream.io.sinks import registry
from fleetstream.io.sinks.aws import aws_client
from fleetstream.io.sinks.base import Sink
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.io.sinks.kafka import KafkaSink
from fleetstream.io.sinks.kinesis import KinesisSink
from fleetstream.io.sinks.mqtt import MqttSink
from fleetstream.io.sinks.object.s3 import S3Sink
from fleetstream.io.sinks.pubsub import PubSubSink
from fleetstream.io.sinks.registry import application_sink, build_sink
from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED
from fleetstream.schemas.delivery import Batch, Batching, Record
from fleetstream.schemas.document import document_json, message_id
from fleetstream.schemas.envelope import parse_envelope_line
from fleetstream.simulator import simulate
from fleetstream.transforms.deliver_bounded import BatchInBundleFn
from fleetstream.transforms.deliver_streaming import BatchAndWriteFn
from fleetstream.transforms.delivery_sinks import DeliverySinks
from fleetstream.transforms.delivery_retry import DEFAULT_RETRY
from fleetstream.transforms.delivery_writes import Outcome

APP = "fleet-manager"
AWS_REGION = "eu-central-1"
#: Sink defaults whose batching the trade-off table covers (file and azure_blob share S3's)
TRADEOFF_SINKS: dict[str, type[Sink]] = {"file / s3 / azure_blob": S3Sink,
                                          "kinesis": KinesisSink, "mqtt": MqttSink,
                                          "pubsub": PubSubSink, "kafka": KafkaSink}
#: documents simulated per trade-off point: at least this many, and ten batches
MIN_SIMULATED, MAX_SIMULATED = 20_000, 200_000

Cleanup = Callable[[], None]
METHOD = (
    "Throughput: each sink's `write(batch)` called directly against the local servers of "
    "`fleetstream.dev` (mosquitto, the Pub/Sub emulator pstest, the local Kafka broker, moto "
    "for S3 and Kinesis, azurite; single local processes, "
    "so these are client-plus-emulator figures, not cloud ones), with simulated and mapped "
    "documents cut into batches by Deliver's own batch-job batcher at each sink's "
    "`DEFAULT_BATCHING`. Trade-off: Deliver's streaming batcher (`BatchAndWriteFn` from "
    "`fleetstream/transforms/deliver_streaming.py`, so the same flush rule as the pipeline) driven with "
    "in-memory state and timers on a simulated clock over evenly spaced arrivals; a timer fires "
    "exactly at its time; the wait is from a document's arrival to its batch's flush, the write "
    "itself excluded. Writes are `sink.write` calls: Kinesis sends one PutRecords per 500 "
    "records (up to `concurrency` at once, on disjoint vehicles), MQTT one message per "
    "document whatever the batch (the whole batch in flight), Pub/Sub one publish request "
    "per vehicle (ordering key) in the batch, all in flight at once, and Kafka lets "
    "librdkafka batch per partition. "
    "Ceilings (rows named so, measured right after their sink in the same run): the bare "
    "client doing the same job as fast as it can. Validation: one point "
    "re-run through the real `Deliver` in a streaming TestStream pipeline.")


# --- documents --------------------------------------------------------------------

def make_records(count: int, vehicles: int = 500, seed: int = 11) -> list[Record]:
    """`count` delivered documents of simulated vehicles, in arrival order."""
    records: list[Record] = []
    for envelope in simulate(vehicles, messages=count * 2, rate=1.0, seed=seed):
        raw = parse_envelope_line(orjson.dumps(envelope))
        result = MAPPERS[raw.source](raw.payload, raw.received_at_ms)
        if result.outcome == FAILED or result.outcome == IGNORED:
            continue
        msg_id = message_id(raw.source_message_id(), APP)
        records.append(Record(result.vin, msg_id, result.newest_ms,
                              document_json(APP, result.vin, raw.source, msg_id, result.data)))
        if len(records) == count:
            return records
    raise RuntimeError(f"the simulator gave only {len(records)} documents")


def deliver_batches(records: Sequence[Record], batching: Batching) -> list[Batch]:
    """The batches Deliver's batch-job batcher makes of `records` in one bundle."""
    batcher = BatchInBundleFn({APP: batching})
    batcher.start_bundle()
    batches = [b for record in records for b in batcher.process((APP, record))]
    return batches + [windowed.value for windowed in batcher.finish_bundle()]


# --- targets: a sink's options on a fresh bucket, stream, container or folder ------

def aws_options(moto: Service) -> dict[str, Any]:
    """Options for the AWS sinks against moto."""
    return {"region": AWS_REGION, "endpoint_url": moto.endpoint_url,  # type: ignore[attr-defined]
            "access_key_id": "test", "secret_access_key": "test"}


def s3_target(object_format: str, moto: Service, name: str) -> tuple[dict[str, Any], Cleanup]:
    options = {**aws_options(moto), "bucket": name, "format": object_format}
    client = aws_client("s3", options)
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": AWS_REGION})

    def cleanup() -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
    return {"type": "s3", **options}, cleanup


def kinesis_target(moto: Service, name: str) -> tuple[dict[str, Any], Cleanup]:
    options = {**aws_options(moto), "stream": name}
    client = aws_client("kinesis", options)
    client.create_stream(StreamName=name, ShardCount=4)
    client.get_waiter("stream_exists").wait(StreamName=name)
    return {"type": "kinesis", **options}, lambda: client.delete_stream(StreamName=name)


def azure_target(azurite: Service, name: str) -> tuple[dict[str, Any], Cleanup]:
    from azure.storage.blob import ContainerClient

    connection = azurite.connection_string  # type: ignore[attr-defined]
    container = ContainerClient.from_connection_string(connection, name)
    container.create_container()
    return ({"type": "azure_blob", "container": name, "connection_string": connection},
            container.delete_container)


def pubsub_target(emulator: Service, name: str, **knobs: Any) -> tuple[dict[str, Any], Cleanup]:
    """A topic on the emulator with an ordered subscription, as a customer would have;
    `knobs`: batching knobs instead of the sink's defaults."""
    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    options = {"type": "pubsub", "project": "fleetstream-bench", "topic": name,
               "emulator_host": emulator.host, **knobs}  # type: ignore[attr-defined]
    admin = PubSubSink(APP, options).client()
    subscriber = pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(
        channel=grpc.insecure_channel(emulator.host)))  # type: ignore[attr-defined]
    topic = admin.create_topic(name=f"projects/fleetstream-bench/topics/{name}").name
    subscription = subscriber.create_subscription(request={
        "name": f"projects/fleetstream-bench/subscriptions/{name}", "topic": topic,
        "enable_message_ordering": True}).name

    def cleanup() -> None:
        subscriber.delete_subscription(subscription=subscription)
        admin.delete_topic(topic=topic)
    return options, cleanup


def kafka_target(kafka: Service, name: str) -> tuple[dict[str, Any], Cleanup]:
    from confluent_kafka.admin import AdminClient

    bootstrap = kafka.bootstrap  # type: ignore[attr-defined]
    create_topics(bootstrap, [Topic(name, partitions=4)])
    return ({"type": "kafka", "bootstrap": bootstrap, "topic": name},
            lambda: AdminClient({"bootstrap.servers": bootstrap}).delete_topics([name]))


def mqtt_target(mosquitto: Service, name: str) -> tuple[dict[str, Any], Cleanup]:
    return {"type": "mqtt", "host": "127.0.0.1", "port": mosquitto.port, "qos": 1}, lambda: None


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"fleetstream-sinks-bench-secret!!").decode()
WEBHOOK_SECRET_ENV = "FLEETSTREAM_BENCH_WEBHOOK_SECRET"


def _webhook_receiver(port: int, key: bytes) -> None:
    """A customer's endpoint: checks the Standard Webhooks signature, answers 204 (or 401)."""
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
        expected = "v1," + base64.b64encode(
            hmac.new(key, signed + body, hashlib.sha256).digest()).decode()
        ok = hmac.compare_digest(expected, request.headers["webhook-signature"])
        return web.Response(status=204 if ok else 401)

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def webhook_target(mode: str, _: None, name: str) -> tuple[dict[str, Any], Cleanup]:
    """A webhook sink posting to a receiver in a child process (so it has its own GIL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = base64.b64decode(WEBHOOK_SECRET[len("whsec_"):])
    receiver = multiprocessing.get_context("spawn").Process(
        target=_webhook_receiver, args=(port, key), daemon=True)
    receiver.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or not receiver.is_alive():
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.05)
    os.environ[WEBHOOK_SECRET_ENV] = WEBHOOK_SECRET

    def cleanup() -> None:
        receiver.terminate()
        receiver.join(10)
    return ({"type": "webhook", "url": f"http://127.0.0.1:{port}/{name}",
             "secret_env": WEBHOOK_SECRET_ENV, "mode": mode}, cleanup)


def file_target(_: None, name: str) -> tuple[dict[str, Any], Cleanup]:
    folder = tempfile.mkdtemp(prefix=f"{name}-")
    return {"type": "file", "path": folder}, partial(shutil.rmtree, folder, ignore_errors=True)


@dataclass(frozen=True)
class Target:
    """One measured sink: its label, the local service it needs, how to set it up."""

    label: str
    service: str | None
    setup: Callable[[Any, str], tuple[dict[str, Any], Cleanup]]


TARGETS = (Target("mqtt (QoS 1)", "mosquitto", mqtt_target),
           Target("pubsub (ordering key = VIN)", "pubsub", pubsub_target),
           Target("pubsub (ordering key = VIN), max_records 1,000", "pubsub",
                  partial(pubsub_target, max_records=1000)),
           Target("kafka (idempotent, acks=all)", "kafka", kafka_target),
           Target("kinesis", "moto", kinesis_target),
           Target("s3 jsonl", "moto", partial(s3_target, "jsonl")),
           Target("s3 avro", "moto", partial(s3_target, "avro")),
           Target("azure_blob jsonl", "azurite", azure_target),
           Target("file jsonl", None, file_target),
           Target("webhook batch", None, partial(webhook_target, "batch")),
           Target("webhook single", None, partial(webhook_target, "single")))


@dataclass(frozen=True)
class Throughput:
    label: str
    batching: Batching
    batches: int
    seconds: float
    batch: str = ""   # what one write is, for a ceiling (else the batching's limits)


# --- ceilings: the bare client doing the sink's job as fast as it can -------------

def mqtt_ceiling(mosquitto: Service, records: Sequence[Record], repeat: int) -> float:
    """Best of `repeat` passes of paho publishing `records` QoS 1 on per-vehicle topics, all
    in flight at once (no in-flight window), until every PUBACK is in."""
    import threading

    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("mqtt ceiling: no connection")
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            sent = [client.publish(f"bench/ceiling/{r.vin}", r.document, qos=1)
                    for r in records]
            for message in sent:
                message.wait_for_publish(60)
            best = min(best, time.perf_counter() - started)
        return best
    finally:
        client.disconnect()
        client.loop_stop()


def mqtt_socket_ceiling(mosquitto: Service, records: Sequence[Record], repeat: int) -> float:
    """Best of `repeat` passes of the PUBLISH packets of `records` (QoS 1, per-vehicle topics),
    built before the clock starts, written to one socket at once, until as many PUBACKs are
    in: what the broker takes from one connection, with no client work at all."""
    from fleetstream.io.sinks.mqtt_wire import MAX_IN_FLIGHT, connect_packet, publish_packets

    assert len(records) <= MAX_IN_FLIGHT, "one pass's packet ids must be distinct"
    data, _ = publish_packets([(f"bench/socket/{r.vin}", r.document) for r in records], 1, 1)
    quickack = getattr(socket, "TCP_QUICKACK", None)
    with socket.create_connection(("127.0.0.1", mosquitto.port), timeout=60) as sock:
        sock.sendall(connect_packet(f"bench-{uuid.uuid4().hex[:8]}", 30))
        if sock.recv(4) != b"\x20\x02\x00\x00":
            raise RuntimeError("mqtt socket ceiling: connection refused")
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            sock.sendall(data)
            left = 4 * len(records)   # a PUBACK is 4 bytes
            while left:
                acknowledged = sock.recv(min(left, 1 << 16))
                if not acknowledged:
                    raise RuntimeError("mqtt socket ceiling: the broker closed the connection")
                left -= len(acknowledged)
                if quickack is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            best = min(best, time.perf_counter() - started)
    return best


def kinesis_ceiling(threads: int, moto: Service, records: Sequence[Record],
                    repeat: int) -> float:
    """Best of `repeat` passes of boto3 `put_records` over `records` in 500-record requests on
    a fresh stream (after one warm-up call, as for the sink): one after another, or from
    `threads` threads, each on its own vehicles."""
    from concurrent.futures import ThreadPoolExecutor

    from botocore.config import Config

    from fleetstream.io.sinks.aws import WRITE_CONFIG

    options, cleanup = kinesis_target(moto, f"fleetstream-bench-{uuid.uuid4().hex[:10]}")
    client = aws_client("kinesis", options, WRITE_CONFIG.merge(
        Config(max_pool_connections=max(10, threads))))
    lanes: list[list[dict[str, Any]]] = [[] for _ in range(threads)]
    for record in records:
        lanes[zlib.crc32(record.vin.encode()) % threads].append(
            {"Data": record.document, "PartitionKey": record.vin})

    def send(lane: list[dict[str, Any]]) -> None:
        for start in range(0, len(lane), 500):
            client.put_records(StreamName=options["stream"], Records=lane[start:start + 500])
    try:
        send(lanes[0][:500])
        best = float("inf")
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(repeat):
                started = time.perf_counter()
                list(pool.map(send, lanes))
                best = min(best, time.perf_counter() - started)
        return best
    finally:
        cleanup()


#: per target label: (label, what one write is, seconds for `records`) of its ceilings
CEILINGS: dict[str, tuple[tuple[str, str, Callable[[Any, Sequence[Record], int], float]], ...]] = {
    "mqtt (QoS 1)": (("mqtt ceiling: bare paho, QoS 1, all in flight", "all at once",
                      mqtt_ceiling),
                     ("mqtt ceiling: bare socket, QoS 1 packets built beforehand", "all at once",
                      mqtt_socket_ceiling)),
    "kinesis": (("kinesis ceiling: boto3 put_records in a loop", "500 a call",
                 partial(kinesis_ceiling, 1)),
                ("kinesis ceiling: boto3 put_records, 4 threads", "500 a call",
                 partial(kinesis_ceiling, 4))),
}


def measure_sink(target: Target, service: Service | None, records: Sequence[Record],
                 repeat: int) -> Throughput:
    """Best of `repeat` timed passes writing `records` in Deliver's default batches."""
    options, cleanup = target.setup(service, f"fleetstream-bench-{uuid.uuid4().hex[:10]}")
    try:
        sink, batching = build_sink(APP, options)
        batches = deliver_batches(records, batching)
        sink.open()
        try:
            sink.write(batches[0])  # warm-up: connection, first request
            best = float("inf")
            for _ in range(repeat):
                started = time.perf_counter()
                for batch in batches:
                    sink.write(batch)
                best = min(best, time.perf_counter() - started)
        finally:
            sink.close()
    finally:
        cleanup()
    return Throughput(target.label, batching, len(batches), best)


def measure_sinks(records: Sequence[Record], repeat: int,
                  only: Sequence[str] = ()) -> list[Throughput]:
    """Every target (or those whose label starts with a word of `only`), its local service
    started for it unless already running."""
    results = []
    with contextlib.ExitStack() as services:
        started: dict[str, Service] = {}
        for target in TARGETS:
            if only and not any(target.label.startswith(word) for word in only):
                continue
            service = None
            if target.service is not None:
                if target.service not in started:
                    started[target.service] = services.enter_context(contextlib.contextmanager(
                        running_service)(SERVICES[target.service]()))
                service = started[target.service]
            results.append(measure_sink(target, service, records, repeat))
            for label, batch, ceiling in CEILINGS.get(target.label, ()):
                results.append(Throughput(label, results[-1].batching, 0,
                                          ceiling(service, records, repeat), batch))
            for result in results[-1 - len(CEILINGS.get(target.label, ())):]:
                print(f"{result.label}: {len(records) / result.seconds:,.0f} documents/s",
                      file=sys.stderr)
    return results


# --- trade-off: Deliver's streaming batcher on a simulated clock ------------------

class _Bag:
    """In-memory BagState."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        self.items.append(item)

    def read(self) -> list[Any]:
        return list(self.items)

    def clear(self) -> None:
        self.items = []


class _Value:
    """In-memory ReadModifyWriteState."""

    def __init__(self) -> None:
        self.value: Any = None

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


class _Timer:
    """In-memory timer: remembers when it is set to fire."""

    def __init__(self) -> None:
        self.at: float | None = None

    def set(self, timestamp: Any) -> None:
        self.at = float(timestamp)

    def clear(self) -> None:
        self.at = None


@dataclass(frozen=True)
class Flush:
    """A batch Deliver emitted: when, how many documents, whether its timer did it."""

    at: float
    size: int
    by_timer: bool


class _RecordedWrites(DeliverySinks):
    """Deliver's sinks for the simulation: each write succeeds and is kept as a Flush."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__((), None, None)  # type: ignore[arg-type]
        self.clock = clock
        self.by_timer = False
        self.flushes: list[Flush] = []

    def open(self) -> None:
        self.policies = {APP: DEFAULT_RETRY}
        self.writes = _RecordedAttempts(self)  # type: ignore[assignment]

    def write(self, batch: Batch) -> None:
        self.flushes.append(Flush(self.clock(), len(batch.records), self.by_timer))


class _RecordedAttempts:
    """The simulation's `WorkerWrites`: each attempt is written at once, and succeeds."""

    def __init__(self, sinks: _RecordedWrites) -> None:
        self.sinks = sinks

    def started(self, application_id: str, batch_id: str) -> bool:
        return False

    def busy(self, application_id: str) -> bool:
        return False

    def attempt(self, batch: Batch, inline_s: float | None) -> Outcome:
        self.sinks.write(batch)
        return Outcome(None)


def simulate_flushes(batching: Batching, arrivals: Sequence[float],
                     records: Sequence[Record]) -> list[Flush]:
    """The batches `BatchAndWriteFn` writes for documents arriving at `arrivals` (seconds).

    Documents are `records` reused in turn; a partial batch left at the end is not written.
    """
    now = [0.0]
    writes = _RecordedWrites(lambda: now[0])
    batcher = BatchAndWriteFn({APP: batching}, writes, clock=lambda: now[0])
    batcher.setup()
    bag, size, held, delay, retry, end = _Bag(), _Value(), _Value(), _Timer(), _Timer(), _Timer()
    window = GlobalWindow()
    for index, arrival in enumerate(arrivals):
        if delay.at is not None and delay.at <= arrival:
            now[0], delay.at, writes.by_timer = delay.at, None, True   # the timer fires once
            list(batcher.on_delay(key=(APP, 0), pending=bag, size=size, held=held, retry=retry))
        now[0], writes.by_timer = arrival, False
        list(batcher.process(((APP, 0), [(APP, records[index % len(records)])]), pending=bag,
                             size=size, held=held, delay=delay, retry=retry, end=end,
                             window=window))
    return writes.flushes


@dataclass(frozen=True)
class TradeOff:
    sink: str
    rate: float
    max_delay_s: float
    writes_per_10k: float
    mean_batch: float
    mean_delay_s: float
    p99_delay_s: float
    timer_share: float


def wait_times(flushes: Sequence[Flush], arrivals: Sequence[float]) -> np.ndarray:
    """Seconds each flushed document waited in its batch (documents flush in arrival order)."""
    sizes = [f.size for f in flushes]
    emitted = np.repeat([f.at for f in flushes], sizes)
    return emitted - np.asarray(arrivals[:len(emitted)])


def trade_off(sink: str, defaults: Batching, rate: float, max_delay_s: float,
              records: Sequence[Record]) -> TradeOff:
    """One point of the trade-off: `defaults` with `max_delay_s`, at `rate` documents/s."""
    batching = Batching(defaults.max_records, defaults.max_bytes, max_delay_s)
    count = int(min(MAX_SIMULATED, max(MIN_SIMULATED, 10 * rate * max_delay_s)))
    arrivals = np.arange(count) / rate
    flushes = simulate_flushes(batching, arrivals, records)
    waits = wait_times(flushes, arrivals)
    return TradeOff(sink, rate, max_delay_s, len(flushes) / len(waits) * 10_000,
                    len(waits) / len(flushes), float(waits.mean()),
                    float(np.percentile(waits, 99)),
                    sum(f.by_timer for f in flushes) / len(flushes))


# --- validation: the real Deliver on a TestStream ---------------------------------

_TEST_CLOCKS: list[Any] = []
_RECORDED: list[tuple[float, list[int]]] = []


def _test_clock_now() -> float:
    return _TEST_CLOCKS[-1].time()


class _RecordingSink(Sink):
    """Remembers each batch's write time (test clock) and its documents' arrival times."""

    TYPE = "bench-recorder"
    DEFAULT_BATCHING = KinesisSink.DEFAULT_BATCHING

    def write(self, batch: Batch) -> None:
        _RECORDED.append((_test_clock_now(), [r.event_ms for r in batch.records]))


def validate(batching: Batching, rate: float, step_s: float, seconds: float,
             records: Sequence[Record]) -> tuple[list[Flush], list[Flush], float]:
    """Simulated and real (TestStream) flushes for the same arrivals, and the real run's seconds.

    Documents arrive `rate * step_s` at a time every `step_s`; each real document
    carries its arrival time (ms) as its event time, so the recording sink can
    tell how long it waited.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.direct import direct_runner
    from apache_beam.runners.direct.clock import TestClock
    from apache_beam.testing.test_stream import TestStream

    from fleetstream.settings.config import parse_config
    from fleetstream.transforms.deliver import Deliver

    per_step = round(rate * step_s)
    steps = int(seconds / step_s)
    arrivals = [step * step_s for step in range(steps) for _ in range(per_step)]
    simulated = simulate_flushes(batching, arrivals, records)

    class RecordedTestClock(TestClock):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _TEST_CLOCKS.append(self)

    stream = TestStream()
    for step in range(steps):
        if step:
            stream = stream.advance_processing_time(step_s)
        stream = stream.add_elements([
            (APP, records[i % len(records)]._replace(event_ms=round(step * step_s * 1000)))
            for i in range(step * per_step, (step + 1) * per_step)])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    sinks, clock_class = registry.SINKS, direct_runner.TestClock
    registry.SINKS = {**sinks, _RecordingSink.TYPE: _RecordingSink}  # type: ignore[misc]
    direct_runner.TestClock = RecordedTestClock
    _RECORDED.clear()
    started = time.perf_counter()
    try:
        applications = parse_config({"applications": [{
            "id": APP, "permissions": ["diagnostics.*"],
            "sink": {"type": _RecordingSink.TYPE, "max_records": batching.max_records,
                     "max_bytes": batching.max_bytes, "max_delay": batching.max_delay_s}}]}
        ).applications
        with beam.Pipeline(options=options) as pipeline:
            _ = pipeline | stream | Deliver(applications, application_sink, clock=_test_clock_now)
    finally:
        registry.SINKS, direct_runner.TestClock = sinks, clock_class  # type: ignore[misc]
    real = [Flush(at, len(arrived), False) for at, arrived in _RECORDED]
    return simulated, real, time.perf_counter() - started


def describe_validation(batching: Batching, rate: float, step_s: float,
                        simulated: list[Flush], real: list[Flush], seconds: float) -> list[str]:
    """Markdown lines comparing the simulated and the real batches (the last, partial one left out)."""
    real_waits = np.concatenate([at - np.asarray(arrived) / 1000 for at, arrived in _RECORDED[:-1]])
    arrivals = [i // round(rate * step_s) * step_s for i in range(sum(f.size for f in simulated))]
    sim_waits = wait_times(simulated, arrivals)
    same = [f.size for f in simulated] == [f.size for f in real[:len(simulated)]]
    return markdown(
        f"Validation: the real `Deliver` (streaming, DirectRunner, TestStream; {seconds:.0f} s of "
        f"wall time) with max_records {batching.max_records}, max_delay {batching.max_delay_s:g} s, "
        f"{rate:g} documents/s arriving {round(rate * step_s)} every {step_s * 1000:g} ms:",
        ["run", "full batches", "batch sizes", "mean wait (s)", "p99 wait (s)"],
        [[name, str(len(flushes)), _sizes(flushes), f"{waits.mean():.3f}",
          f"{np.percentile(waits, 99):.3f}"]
         for name, flushes, waits in (("simulation", simulated, sim_waits),
                                      ("real Deliver", real[:-1], real_waits))]) + [
        f"Batch sizes {'are identical' if same else 'DIFFER'}; the real run's waits are longer by "
        f"up to one arrival step, since its test clock, and so its timers, only move in steps.", ""]


def _sizes(flushes: Sequence[Flush]) -> str:
    distinct = sorted({f.size for f in flushes})
    return ", ".join(str(s) for s in distinct[:6]) + (" ..." if len(distinct) > 6 else "")


# --- report -----------------------------------------------------------------------

def markdown(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A titled Markdown table; every column but the first is right-aligned."""
    return [title, "", "| " + " | ".join(columns) + " |",
            "|---|" + "---:|" * (len(columns) - 1),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def throughput_table(results: Sequence[Throughput], records: Sequence[Record],
                     repeat: int) -> list[str]:
    total = sum(len(r.document) for r in records)
    return markdown(
        f"Throughput: {len(records):,} documents (mean {total / len(records):.0f} bytes, "
        f"{total / 1e6:.1f} MB), best of {repeat} timed passes:",
        ["sink", "batch (max_records / max_bytes)", "writes", "seconds", "documents/s", "MB/s"],
        [[r.label, r.batch or f"{r.batching.max_records:,} / {r.batching.max_bytes >> 20} MiB",
          str(r.batches or ""), f"{r.seconds:.2f}", f"{len(records) / r.seconds:,.0f}",
          f"{total / r.seconds / 1e6:.1f}"] for r in results])


def trade_off_table(points: Sequence[TradeOff]) -> list[str]:
    return markdown(
        "Batching trade-off at each sink's default max_records / max_bytes "
        "(Deliver's streaming batcher on a simulated clock, steady arrivals):",
        ["sink defaults", "documents/s", "max_delay (s)", "writes per 10,000 documents",
         "mean batch", "mean wait (s)", "p99 wait (s)", "flushed by timer"],
        [[p.sink, f"{p.rate:,.0f}", f"{p.max_delay_s:g}", f"{p.writes_per_10k:,.1f}",
          f"{p.mean_batch:,.0f}", f"{p.mean_delay_s:.3f}", f"{p.p99_delay_s:.3f}",
          f"{p.timer_share:.0%}"] for p in points])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per sink")
    parser.add_argument("--rates", type=float, nargs="+", default=[200, 2000])
    parser.add_argument("--delays", type=float, nargs="+", default=[0, 0.1, 0.5, 1, 5, 30])
    parser.add_argument("--no-validate", action="store_true",
                        help="skip the real Deliver run of one trade-off point")
    parser.add_argument("--sinks", nargs="+", default=[],
                        help="measure only the targets whose label starts with one of these")
    parser.add_argument("--write", help="append the results as Markdown to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    records = make_records(args.documents)
    lines = throughput_table(measure_sinks(records, args.repeat, args.sinks), records, args.repeat)

    points = [trade_off(name, cls.DEFAULT_BATCHING, rate, delay, records)
              for name, cls in TRADEOFF_SINKS.items() for rate in args.rates
              for delay in sorted({*args.delays, cls.DEFAULT_BATCHING.max_delay_s})]
    lines += trade_off_table(points)
    if not args.no_validate:
        batching, rate, step_s = KinesisSink.DEFAULT_BATCHING, 200.0, 0.03
        simulated, real, seconds = validate(batching, rate, step_s, 10.0, records)
        lines += describe_validation(batching, rate, step_s, simulated, real, seconds)

    command = "python benchmarks/sinks_bench.py " + " ".join(sys.argv[1:])
    header = ["## Sinks: write throughput and the batching trade-off", "",
              f"`benchmarks/sinks_bench.py`, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
              f"{os.cpu_count()} cores (shared with a running local Flink cluster), Python "
              f"{platform.python_version()}, {time.perf_counter() - started:.0f} s in all; "
              f"`{command.strip()}`.", "", METHOD, ""]
    print("\n".join(header + lines))
    if args.write:
        new = not os.path.exists(args.write)
        with open(args.write, "a") as out:
            out.write(("# Benchmarks\n\n" if new else "") + "\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
