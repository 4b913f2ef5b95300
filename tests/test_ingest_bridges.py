"""The ingest bridges (fleetstream/ingest/bridges/) against real servers: Mosquitto, RabbitMQ,
moto (SQS, Kinesis) and Kafka. Each bridge writes every message untouched with its key,
acknowledges (deletes, checkpoints, commits) a message only after Kafka acknowledged its
record, and sends poison to the dead letters before acknowledging it."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import aio_pika
import boto3
import orjson
import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetstream.dev.mosquitto import MosquittoService
from fleetstream.ingest.bridges.base import Bridge
from fleetstream.ingest.bridges.registry import BRIDGES, build_bridge
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import KafkaUnavailable, RawWriter
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.schemas.errors import ConfigError
from tests.helpers import free_port

pytest_plugins = ["fleetstream.dev.pytest_plugin", "fleetstream.dev.sink_pytest_plugin"]

N = 40
SOURCE = "oem"


# --- helpers -----------------------------------------------------------------------------
def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class FailingWriter(RawWriter):
    """A RawWriter whose Kafka never acknowledges: every record handed over fails a moment
    later with KafkaUnavailable, as when its delivery times out."""

    attempts = 0

    def submit(self, topic: str, value: bytes, key: bytes | None = None,
               timestamp_ms: int | None = None) -> asyncio.Future[None]:
        self.attempts += 1
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(
            0.01, failed.set_exception, KafkaUnavailable("test: Kafka is away"))
        return failed


@pytest.fixture
def kafka(kafka_service) -> Any:
    """A RawWriter with a dead-letter topic of its own, the raw topic, and a reader."""
    class Kafka:
        bootstrap = kafka_service.bootstrap
        raw = unique("raw.test")
        dead = unique("dead-letters.test")
        writer = RawWriter(kafka_service.bootstrap, dead_letters_topic=dead)

        def read(self, topic: str, count: int, timeout_s: float = 20.0) -> list[tuple]:
            return read_records(self.bootstrap, topic, count, timeout_s)

    k = Kafka()
    k.writer.ensure_topics([k.raw])
    yield k
    k.writer.close()


def read_records(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0) -> list[tuple]:
    """(key, value) of the records of `topic`, waiting for `count` and 0.5 s more for extras."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list[tuple] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for record in consumer.consume(500, 0.5):
                if record.error() is None:
                    records.append((record.key(), record.value()))
            if len(records) >= count:
                deadline = min(deadline, time.monotonic() + 0.5)
    finally:
        consumer.close()
    return records


def run_bridge(bridge: Bridge, writer: RawWriter, expect: int, timeout_s: float = 20.0
               ) -> IngestMetrics:
    """Run `bridge` until it handled `expect` messages (written or dead letters) or
    `timeout_s` passed, then stop it and wait until it returned."""
    async def main() -> IngestMetrics:
        metrics, stop = IngestMetrics(), asyncio.Event()
        task = asyncio.create_task(bridge.run(writer, metrics, stop))
        deadline = time.monotonic() + timeout_s
        while handled(metrics) < expect and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 30)
        return metrics

    return asyncio.run(main())


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target` on the running event loop; `drop` cuts every
    connection through it, as a network failure would."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.links: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    def drop(self) -> None:
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()

    async def close(self) -> None:
        self.drop()
        self.server.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
        self.links += [writer, upstream]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))


async def until(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def handled(metrics: IngestMetrics) -> float:
    return sum(sample.value for family in (metrics.records, metrics.dead_letters)
               for metric in family.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


def payloads(count: int = N) -> list[tuple[bytes, bytes]]:
    """(VIN, payload) pairs: 4 vehicles, JSON payloads with a non-ASCII byte to keep exact."""
    return [(f"VIN{i % 4:014d}".encode(),
             orjson.dumps({"seq": i, "odometer": 1000.5 + i, "name": "Fahrzeug ü"}))
            for i in range(count)]


def dead_letters(kafka: Any, count: int) -> list[dict]:
    return [orjson.loads(value) for _, value in kafka.read(kafka.dead, count)]


def build(kind: str, topic: str, options: dict) -> Bridge:
    return build_bridge(kind, SOURCE, topic, options, f"sources.{SOURCE}.{kind}")


# --- configuration -----------------------------------------------------------------------
@pytest.mark.parametrize("kind, options, key", [
    ("mqtt", {"url": "mqtt://127.0.0.1:1883", "topic": "t", "qos": 0}, "qos"),
    ("mqtt", {"url": "http://127.0.0.1", "topic": "t"}, "url"),
    ("mqtt", {"url": "mqtt://h", "topic": "t", "vin_topic_level": -1}, "vin_topic_level"),
    ("mqtt", {"url": "mqtt://h", "topic": "t", "username_env": "NOT_SET_ANYWHERE"},
     "username_env"),
    ("amqp", {"url": "amqp://guest:guest@127.0.0.1/", "queue": "q"}, "url"),
    ("amqp", {"url": "amqp://127.0.0.1/", "queue": "q", "prefetch": 0}, "prefetch"),
    ("sqs", {"queue_url": "http://q", "wait_time_s": 30}, "wait_time_s"),
    ("kinesis", {"stream": "s", "start": "earliest"}, "start"),
    ("kafka", {"bootstrap": "b:9092", "topic": "t", "group": "g",
               "consumer_config": {"group.id": "x"}}, "consumer_config.group.id"),
    ("kafka", {"bootstrap": "b:9092", "topic": "t", "group": "g", "max_message_bytes": "1M"},
     "max_message_bytes"),
])
def test_a_wrong_option_is_refused_naming_it(kind, options, key) -> None:
    with pytest.raises(ConfigError, match=rf"sources\.{SOURCE}\.{kind}\.{key}\b"):
        build(kind, "raw.oem", options)


@pytest.mark.parametrize("kind", sorted(BRIDGES))
def test_an_unknown_or_missing_key_is_refused_naming_the_section(kind) -> None:
    with pytest.raises(ConfigError, match=rf"sources\.{SOURCE}\.{kind}: unknown key\(s\) colour"):
        build(kind, "raw.oem", {"colour": "red"})
    with pytest.raises(ConfigError, match=rf"sources\.{SOURCE}\.{kind}: missing"):
        build(kind, "raw.oem", {})


def test_every_kind_the_settings_accept_has_a_bridge_whose_kind_it_is() -> None:
    import importlib

    from fleetstream.ingest.bridges.registry import BRIDGES
    from fleetstream.settings.ingest import BRIDGE_KINDS
    assert set(BRIDGES) == set(BRIDGE_KINDS)
    for kind, target in BRIDGES.items():
        module, _, name = target.partition(":")
        assert getattr(importlib.import_module(module), name).KIND == kind


# --- MQTT --------------------------------------------------------------------------------
def mqtt_session(port: int, client_id: str, subscription: str) -> None:
    """Make the bridge's persistent session (subscribed) before it runs, as after a restart."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 600
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    client.subscribe(subscription, qos=1)[1]
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


def mqtt_publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for info in [client.publish(topic, payload, qos=1) for topic, payload in messages]:
        info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def mqtt_bridge(mosquitto_service, kafka) -> Any:
    prefix = unique("test/bridge")
    options = {"url": f"mqtt://127.0.0.1:{mosquitto_service.port}",
               "topic": f"{prefix}/+/telemetry", "vin_topic_level": 2,
               "client_id": unique("fleetstream-test")}
    mqtt_session(mosquitto_service.port, options["client_id"], options["topic"])
    return prefix, options


def test_mqtt_messages_arrive_untouched_keyed_by_the_topic_s_vin(mosquitto_service, kafka,
                                                                  mqtt_bridge) -> None:
    prefix, options = mqtt_bridge
    sent = payloads()
    mqtt_publish(mosquitto_service.port, [(f"{prefix}/{vin.decode()}/telemetry", payload)
                                          for vin, payload in sent])
    metrics = run_bridge(build("mqtt", kafka.raw, options), kafka.writer, N)
    assert sorted(kafka.read(kafka.raw, N)) == sorted(sent)
    assert metrics.registry.get_sample_value(
        "fleetstream_ingest_records_total", {"source": SOURCE, "via": "mqtt"}) == N


def test_mqtt_messages_not_written_are_not_acknowledged_and_come_again(
        mosquitto_service, kafka, mqtt_bridge) -> None:
    prefix, options = mqtt_bridge
    sent = payloads(10)
    mqtt_publish(mosquitto_service.port, [(f"{prefix}/{vin.decode()}/telemetry", payload)
                                          for vin, payload in sent])
    failing = FailingWriter(kafka.bootstrap)
    run_bridge(build("mqtt", kafka.raw, options), failing, 10**6, timeout_s=1.5)
    failing.close()
    assert failing.attempts >= 10
    assert kafka.read(kafka.raw, 1, timeout_s=1) == []
    # the same session again: the broker sends every unacknowledged message once more
    run_bridge(build("mqtt", kafka.raw, options), kafka.writer, 10)
    assert sorted(kafka.read(kafka.raw, 10)) == sorted(sent)


def test_mqtt_poison_goes_to_the_dead_letters_and_is_acknowledged(mosquitto_service, kafka,
                                                                  mqtt_bridge) -> None:
    prefix, options = mqtt_bridge
    options = {**options, "topic": f"{prefix}/#", "max_message_bytes": 100,
               "client_id": unique("fleetstream-test")}
    mqtt_session(mosquitto_service.port, options["client_id"], options["topic"])
    mqtt_publish(mosquitto_service.port, [(f"{prefix}/V1/telemetry", b"x" * 101),
                                          (f"{prefix}", b'{"no": "vin level"}'),
                                          (f"{prefix}/V2/telemetry", b"{}")])
    metrics = run_bridge(build("mqtt", kafka.raw, options), kafka.writer, 3)
    letters = dead_letters(kafka, 2)
    reasons = sorted(letter["errors"][0]["reason"] for letter in letters)
    assert "over max_message_bytes 100" in reasons[0] and "has no level 2" in reasons[1]
    assert {letter["errors"][0]["field"] for letter in letters} == {"mqtt"}
    assert kafka.read(kafka.raw, 1) == [(b"V2", b"{}")]
    assert metrics.registry.get_sample_value(
        "fleetstream_ingest_dead_letters_total", {"source": SOURCE, "via": "mqtt"}) == 2
    # acknowledged: nothing comes again to the same session
    again = run_bridge(build("mqtt", kafka.raw, options), kafka.writer, 1, timeout_s=1.5)
    assert handled(again) == 0


def test_mqtt_bridge_connects_again_when_its_connection_drops_and_loses_nothing(
        mosquitto_service, kafka, mqtt_bridge, caplog) -> None:
    prefix, options = mqtt_bridge
    sent = payloads(20)
    messages = [(f"{prefix}/{vin.decode()}/telemetry", payload) for vin, payload in sent]

    async def main() -> IngestMetrics:
        metrics, stop = IngestMetrics(), asyncio.Event()
        task = asyncio.create_task(build("mqtt", kafka.raw, options).run(kafka.writer, metrics,
                                                                          stop))
        await asyncio.to_thread(mqtt_publish, mosquitto_service.port, messages[:10])
        await until(lambda: handled(metrics) >= 10)
        # another client takes the session over: the broker drops the bridge's connection;
        # what is published meanwhile waits in the session for the bridge's next connection
        await asyncio.to_thread(mqtt_session, mosquitto_service.port, options["client_id"],
                                options["topic"])
        await asyncio.to_thread(mqtt_publish, mosquitto_service.port, messages[10:])
        await until(lambda: handled(metrics) >= 20)
        stop.set()
        await asyncio.wait_for(task, 30)
        return metrics

    metrics = asyncio.run(main())
    assert "connecting again" in caplog.text
    assert sorted(kafka.read(kafka.raw, 20)) == sorted(sent)
    assert handled(metrics) == 20


def test_mqtt_bridge_started_before_its_broker_connects_once_the_broker_is_up(
        kafka, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path / "home"))   # the broker's own files
    port = free_port()
    options = {"url": f"mqtt://127.0.0.1:{port}", "topic": "late/+/telemetry",
               "vin_topic_level": 1, "client_id": unique("fleetstream-test")}

    async def main() -> IngestMetrics:
        metrics, stop = IngestMetrics(), asyncio.Event()
        task = asyncio.create_task(build("mqtt", kafka.raw, options).run(kafka.writer, metrics,
                                                                          stop))
        await asyncio.sleep(1.5)       # a refused connection or two
        assert not task.done()
        broker = MosquittoService(port, name="mosquitto-late")
        await asyncio.to_thread(broker.start)
        try:
            # retained: the bridge receives it as soon as it has subscribed
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            client.connect("127.0.0.1", port)
            client.loop_start()
            client.publish("late/V1/telemetry", b"{}", qos=1, retain=True).wait_for_publish(5)
            client.disconnect()
            client.loop_stop()
            await until(lambda: handled(metrics) >= 1)
            stop.set()
            await asyncio.wait_for(task, 30)
        finally:
            broker.stop()
        return metrics

    asyncio.run(main())
    assert kafka.read(kafka.raw, 1) == [(b"V1", b"{}")]


# --- AMQP --------------------------------------------------------------------------------
@pytest.fixture
def amqp_queue(rabbitmq_service, monkeypatch) -> Any:
    """A fresh durable queue; publish(bodies, headers) puts messages on it; count() reads
    how many are ready."""
    name = unique("test.bridge")
    monkeypatch.setenv("TEST_AMQP_PASSWORD", "guest")

    async def declare_and(action: Any) -> Any:
        connection = await aio_pika.connect(rabbitmq_service.url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, durable=True)
            return await action(channel, queue)

    class Queue:
        options = {"url": f"amqp://guest@127.0.0.1:{rabbitmq_service.port}/", "queue": name,
                   "password_env": "TEST_AMQP_PASSWORD", "vin_header": "vin"}

        def publish(self, messages: list[tuple[Any, bytes]]) -> None:
            async def put(channel, queue):
                for vin, body in messages:
                    await channel.default_exchange.publish(
                        aio_pika.Message(body, headers={"vin": vin} if vin is not None else {}),
                        routing_key=name)
            asyncio.run(declare_and(put))

        def count(self) -> int:
            async def ready(channel, queue):
                return (await channel.declare_queue(name, passive=True)).declaration_result \
                    .message_count
            return asyncio.run(declare_and(ready))

    asyncio.run(declare_and(lambda channel, queue: asyncio.sleep(0)))
    yield Queue()

    async def delete(channel, queue):
        await queue.delete(if_unused=False, if_empty=False)
    asyncio.run(declare_and(delete))


def test_amqp_messages_arrive_untouched_keyed_by_the_vin_header(kafka, amqp_queue) -> None:
    sent = payloads()
    amqp_queue.publish([(vin.decode(), payload) for vin, payload in sent])
    run_bridge(build("amqp", kafka.raw, amqp_queue.options), kafka.writer, N)
    assert sorted(kafka.read(kafka.raw, N)) == sorted(sent)
    assert amqp_queue.count() == 0


def test_amqp_messages_not_written_stay_in_the_queue(kafka, amqp_queue) -> None:
    sent = payloads(10)
    amqp_queue.publish([(vin.decode(), payload) for vin, payload in sent])
    failing = FailingWriter(kafka.bootstrap)
    run_bridge(build("amqp", kafka.raw, amqp_queue.options), failing, 10**6, timeout_s=1.5)
    failing.close()
    assert failing.attempts >= 10
    time.sleep(0.5)   # the broker requeues a closed channel's unacknowledged messages
    assert amqp_queue.count() == 10
    run_bridge(build("amqp", kafka.raw, amqp_queue.options), kafka.writer, 10)
    assert sorted(kafka.read(kafka.raw, 10)) == sorted(sent)


def test_amqp_poison_goes_to_the_dead_letters_and_is_acknowledged(kafka, amqp_queue) -> None:
    amqp_queue.publish([("V1", b"x" * 101), (5, b'{"vin": "not text"}'), (None, b"{}")])
    options = {**amqp_queue.options, "max_message_bytes": 100}
    run_bridge(build("amqp", kafka.raw, options), kafka.writer, 3)
    reasons = sorted(letter["errors"][0]["reason"] for letter in dead_letters(kafka, 2))
    assert "over max_message_bytes 100" in reasons[1] and "(vin_header) is 5" in reasons[0]
    assert kafka.read(kafka.raw, 1) == [(None, b"{}")]
    time.sleep(0.5)
    assert amqp_queue.count() == 0


def test_amqp_bridge_connects_again_when_its_connection_drops_and_loses_nothing(
        kafka, amqp_queue, rabbitmq_service, caplog) -> None:
    sent = payloads(20)
    messages = [(vin.decode(), payload) for vin, payload in sent]
    proxy = TcpProxy(free_port(), rabbitmq_service.port)
    options = {**amqp_queue.options, "url": f"amqp://guest@127.0.0.1:{proxy.port}/"}

    async def main() -> IngestMetrics:
        await proxy.start()
        metrics, stop = IngestMetrics(), asyncio.Event()
        task = asyncio.create_task(build("amqp", kafka.raw, options).run(kafka.writer, metrics,
                                                                          stop))
        await asyncio.to_thread(amqp_queue.publish, messages[:10])
        await until(lambda: handled(metrics) >= 10)
        proxy.drop()
        await asyncio.to_thread(amqp_queue.publish, messages[10:])
        await until(lambda: handled(metrics) >= 20)
        stop.set()
        await asyncio.wait_for(task, 30)
        await proxy.close()
        return metrics

    metrics = asyncio.run(main())
    assert "connecting again" in caplog.text
    # a message written but not yet acknowledged when the connection dropped comes again
    assert set(kafka.read(kafka.raw, int(handled(metrics)))) == set(sent)
    assert amqp_queue.count() == 0


def test_amqp_bridge_started_before_its_broker_connects_once_the_broker_is_up(
        kafka, amqp_queue, rabbitmq_service) -> None:
    proxy = TcpProxy(free_port(), rabbitmq_service.port)   # not listening yet: refused
    options = {**amqp_queue.options, "url": f"amqp://guest@127.0.0.1:{proxy.port}/"}
    amqp_queue.publish([("V1", b"{}")])

    async def main() -> None:
        metrics, stop = IngestMetrics(), asyncio.Event()
        task = asyncio.create_task(build("amqp", kafka.raw, options).run(kafka.writer, metrics,
                                                                          stop))
        await asyncio.sleep(1.5)
        assert not task.done() and handled(metrics) == 0
        await proxy.start()
        await until(lambda: handled(metrics) >= 1)
        stop.set()
        await asyncio.wait_for(task, 30)
        await proxy.close()

    asyncio.run(main())
    assert kafka.read(kafka.raw, 1) == [(b"V1", b"{}")]


def test_amqp_queue_that_does_not_exist_stops_the_bridge_naming_the_option(
        kafka, rabbitmq_service, monkeypatch) -> None:
    monkeypatch.setenv("TEST_AMQP_PASSWORD", "guest")
    bridge = build("amqp", kafka.raw, {"url": f"amqp://guest@127.0.0.1:{rabbitmq_service.port}/",
                                       "queue": unique("missing"),
                                       "password_env": "TEST_AMQP_PASSWORD"})
    with pytest.raises(ConfigError, match=r"sources\.oem\.amqp\.queue: no queue"):
        run_bridge(bridge, kafka.writer, 1, timeout_s=10)


# --- SQS ---------------------------------------------------------------------------------
@pytest.fixture
def aws(moto_service, monkeypatch) -> dict:
    for variable, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "eu-central-1")):
        monkeypatch.setenv(variable, value)
    return {"region": "eu-central-1", "endpoint_url": moto_service.endpoint_url}


@pytest.fixture
def sqs_queue(aws) -> Any:
    client = boto3.client("sqs", region_name=aws["region"], endpoint_url=aws["endpoint_url"])
    url = client.create_queue(QueueName=unique("bridge"),
                              Attributes={"VisibilityTimeout": "2"})["QueueUrl"]

    def send(messages: list[tuple[Any, bytes]]) -> None:
        for vin, body in messages:
            attributes = ({"vin": {"DataType": "String", "StringValue": vin}} if isinstance(vin, str)
                          else {"vin": {"DataType": "Number", "StringValue": str(vin)}}
                          if vin is not None else {})
            client.send_message(QueueUrl=url, MessageBody=body.decode(),
                                MessageAttributes=attributes)

    def count() -> int:
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(value) for value in attributes.values())

    yield {**aws, "queue_url": url, "vin_attribute": "vin", "wait_time_s": 1}, send, count
    client.delete_queue(QueueUrl=url)


def test_sqs_messages_arrive_untouched_keyed_by_the_vin_attribute(kafka, sqs_queue) -> None:
    options, send, count = sqs_queue
    sent = payloads()
    send([(vin.decode(), payload) for vin, payload in sent])
    metrics = run_bridge(build("sqs", kafka.raw, options), kafka.writer, N)
    assert sorted(kafka.read(kafka.raw, N)) == sorted(sent)
    assert count() == 0
    assert metrics.registry.get_sample_value(
        "fleetstream_ingest_bridge_lag_messages", {"source": SOURCE, "via": "sqs"}) is not None


def test_sqs_messages_not_written_are_not_deleted(kafka, sqs_queue) -> None:
    options, send, count = sqs_queue
    sent = payloads(10)
    send([(vin.decode(), payload) for vin, payload in sent])
    failing = FailingWriter(kafka.bootstrap)
    run_bridge(build("sqs", kafka.raw, options), failing, 10**6, timeout_s=2)
    failing.close()
    # past their visibility timeout all are visible again: counted while some turn visible,
    # a message could fall between the visible and the in-flight count
    time.sleep(2.5)
    assert failing.attempts >= 10 and count() == 10
    run_bridge(build("sqs", kafka.raw, options), kafka.writer, 10)
    assert sorted(kafka.read(kafka.raw, 10)) == sorted(sent)
    assert count() == 0


def test_sqs_poison_goes_to_the_dead_letters_and_is_deleted(kafka, sqs_queue) -> None:
    options, send, count = sqs_queue
    send([("V1", b"x" * 101), (5, b'{"vin": "a number"}'), (None, b"{}")])
    run_bridge(build("sqs", kafka.raw, {**options, "max_message_bytes": 100}), kafka.writer, 3)
    reasons = sorted(letter["errors"][0]["reason"] for letter in dead_letters(kafka, 2))
    assert "over max_message_bytes 100" in reasons[1] and "is Number, not a String" in reasons[0]
    assert kafka.read(kafka.raw, 1) == [(None, b"{}")]
    assert count() == 0


# --- Kinesis -----------------------------------------------------------------------------
@pytest.fixture
def kinesis_stream(aws, tmp_path) -> Any:
    client = boto3.client("kinesis", region_name=aws["region"], endpoint_url=aws["endpoint_url"])
    name = unique("bridge")
    client.create_stream(StreamName=name, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=name,
                                            WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})

    def put(records: list[tuple[bytes, bytes]]) -> None:
        for key, data in records:
            client.put_record(StreamName=name, Data=data, PartitionKey=key.decode())

    options = {**aws, "stream": name, "start": "trim_horizon",
               "checkpoint_file": str(tmp_path / "checkpoints.json")}
    yield options, put
    client.delete_stream(StreamName=name)


def test_kinesis_records_arrive_untouched_keyed_by_the_partition_key(kafka, kinesis_stream
                                                                     ) -> None:
    options, put = kinesis_stream
    sent = payloads()
    put(sent)
    metrics = run_bridge(build("kinesis", kafka.raw, options), kafka.writer, N)
    assert sorted(kafka.read(kafka.raw, N)) == sorted(sent)
    checkpoints = json.loads(open(options["checkpoint_file"]).read())
    assert len(checkpoints) == 2     # both shards got records of the 4 vehicles
    assert metrics.registry.get_sample_value(
        "fleetstream_ingest_bridge_lag_seconds", {"source": SOURCE, "via": "kinesis"}) is not None
    # a restart resumes after the checkpoints: nothing is read twice
    again = run_bridge(build("kinesis", kafka.raw, options), kafka.writer, 1, timeout_s=2)
    assert handled(again) == 0


def test_kinesis_checkpoints_only_what_was_written(kafka, kinesis_stream) -> None:
    options, put = kinesis_stream
    sent = payloads(10)
    put(sent)
    failing = FailingWriter(kafka.bootstrap)
    run_bridge(build("kinesis", kafka.raw, options), failing, 10**6, timeout_s=2)
    failing.close()
    assert failing.attempts >= 10
    assert json.loads(open(options["checkpoint_file"]).read() if
                      __import__("os").path.exists(options["checkpoint_file"]) else "{}") == {}
    run_bridge(build("kinesis", kafka.raw, options), kafka.writer, 10)
    assert sorted(kafka.read(kafka.raw, 10)) == sorted(sent)


def test_kinesis_poison_goes_to_the_dead_letters_and_is_checkpointed_past(kafka, kinesis_stream
                                                                          ) -> None:
    options, put = kinesis_stream
    put([(b"V1", b"x" * 101), (b"V1", b"{}")])
    options = {**options, "max_message_bytes": 100}
    run_bridge(build("kinesis", kafka.raw, options), kafka.writer, 2)
    [letter] = dead_letters(kafka, 1)
    assert "over max_message_bytes 100" in letter["errors"][0]["reason"]
    assert kafka.read(kafka.raw, 1) == [(b"V1", b"{}")]
    assert handled(run_bridge(build("kinesis", kafka.raw, options), kafka.writer, 1,
                              timeout_s=2)) == 0


# --- Kafka -------------------------------------------------------------------------------
@pytest.fixture
def source_topic(kafka) -> Any:
    """A topic standing for the OEM's cluster (the same local Kafka), and the bridge's options."""
    name = unique("oem.telemetry")
    create_topics(kafka.bootstrap, [Topic(name, partitions=3)])
    producer = Producer({"bootstrap.servers": kafka.bootstrap})

    def produce(records: list[tuple[bytes | None, bytes]]) -> None:
        for key, value in records:
            producer.produce(name, value, key)
        assert producer.flush(10) == 0

    def committed() -> int:
        consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": options["group"]})
        try:
            return sum(max(tp.offset, 0) for tp in consumer.committed(
                [TopicPartition(name, p) for p in range(3)], timeout=10))
        finally:
            consumer.close()

    options = {"bootstrap": kafka.bootstrap, "topic": name, "group": unique("bridge"),
               "consumer_config": {"session.timeout.ms": 6000}}
    return options, produce, committed


def test_kafka_records_arrive_untouched_with_their_key(kafka, source_topic) -> None:
    options, produce, committed = source_topic
    sent = payloads()
    produce(sent)
    metrics = run_bridge(build("kafka", kafka.raw, options), kafka.writer, N)
    assert sorted(kafka.read(kafka.raw, N)) == sorted(sent)
    assert committed() == N
    assert metrics.registry.get_sample_value(
        "fleetstream_ingest_records_total", {"source": SOURCE, "via": "kafka"}) == N


def test_kafka_offsets_are_committed_only_after_the_write(kafka, source_topic) -> None:
    options, produce, committed = source_topic
    sent = payloads(10)
    produce(sent)
    failing = FailingWriter(kafka.bootstrap)
    run_bridge(build("kafka", kafka.raw, options), failing, 10**6, timeout_s=8)
    failing.close()
    assert failing.attempts >= 10 and committed() == 0
    run_bridge(build("kafka", kafka.raw, options), kafka.writer, 10)
    assert sorted(kafka.read(kafka.raw, 10)) == sorted(sent)
    assert committed() == 10


def test_kafka_poison_goes_to_the_dead_letters_and_is_committed_past(kafka, source_topic
                                                                     ) -> None:
    options, produce, committed = source_topic
    produce([(b"V1", b"x" * 101), (None, b"{}")])
    run_bridge(build("kafka", kafka.raw, {**options, "max_message_bytes": 100}),
               kafka.writer, 2)
    [letter] = dead_letters(kafka, 1)
    assert "over max_message_bytes 100" in letter["errors"][0]["reason"]
    assert letter["source"] == SOURCE and letter["stage"] == "ingest"
    assert kafka.read(kafka.raw, 1) == [(None, b"{}")]
    assert committed() == 2
