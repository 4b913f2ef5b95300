"""Bridge benchmark: MQTT and AMQP messages per second end to end into Kafka, against the
ceiling of a bare consume loop on the same broker in the same run.

    python benchmarks/bridge_bench.py [--messages 50000] [--bytes 600] [--repeat 2]
        [--bridges mqtt amqp]

For each bridge, `--messages` messages of `--bytes` bytes (a JSON telemetry payload for
8 vehicles) are first queued at the broker, then drained and timed:

* RawWriter only: the same records written straight through `RawWriter` with 500
  unacknowledged at most, no broker or client: the Kafka side's ceiling;
* bridge: the real bridge class (`fleetstream.ingest.bridges`) writing each message to
  a fresh raw topic on the local Kafka through `RawWriter` (acks=all, idempotent), each
  source message acknowledged only after its write, until all N records are
  acknowledged by Kafka;
* bare: a client library consuming the same queue with the same flow control (MQTT 5
  Receive Maximum, AMQP prefetch) and acknowledging each message at once, without Kafka:
  what the broker and that client can give at most. MQTT: paho with its network thread
  (`paho thread`) and paho on the event loop as the bridge runs it (`paho on loop`);
  AMQP: aio-pika (the bridge's client before) and pika's asyncio adapter (the bridge's).

MQTT runs against a Mosquitto of its own (a free port, `max_queued_messages 0` so that
the broker keeps all N messages for the offline persistent session); AMQP against the
`fleetstream dev` RabbitMQ (started here unless it runs), on a fresh durable queue.
Kafka must run (`fleetstream dev up kafka`, or another one given with `--bootstrap`).
Besides the rates it prints the CPU time this process (all its threads) spent per message
in each: on a shared machine that says more than rates about what bridging costs. Each
figure is the best of `--repeat` runs.
"""
from __future__ import annotations

import argparse
import asyncio
import platform
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable

import aio_pika
import orjson
import paho.mqtt.client as mqtt
import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetstream.dev.kafka import Kafka
from fleetstream.dev.mosquitto import MosquittoService
from fleetstream.dev.rabbitmq import RabbitMQService
from fleetstream.dev.sink_pytest_plugin import running_service
from fleetstream.ingest.bridges.amqp import AmqpBridge
from fleetstream.ingest.bridges.mqtt import RECEIVE_MAXIMUM, MqttBridge, PahoOnLoop
from fleetstream.ingest.metrics import IngestMetrics
from fleetstream.ingest.writer import RawWriter
from tests.helpers import free_port


class BenchMosquitto(MosquittoService):
    """A Mosquitto of the benchmark's own that queues any number of messages for a session."""

    def prepare(self) -> None:
        super().prepare()
        with open(self.config_path, "a") as config:
            config.write("max_queued_messages 0\nmax_queued_bytes 0\n")


def payload(size: int, index: int) -> tuple[str, bytes]:
    vin = f"WBA{index % 8:014d}"
    body = orjson.dumps({"vin": vin, "seq": index, "data": {"odometer": 1000.5 + index}})
    return vin, body + b" " * max(size - len(body), 0)


# --- MQTT --------------------------------------------------------------------------------
def mqtt_client(client_id: str, **kwargs: Any) -> tuple[mqtt.Client, Properties]:
    """A paho client and the CONNECT properties of a persistent session."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, **kwargs)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    client.max_inflight_messages_set(1000)
    return client, properties


def mqtt_connect(port: int, client_id: str, **kwargs: Any) -> mqtt.Client:
    client, properties = mqtt_client(client_id, **kwargs)
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    return client


def acknowledging(messages: int, done: Callable[[], Any]) -> Callable[..., None]:
    """A paho on_message that acknowledges each message at once and calls `done` after
    `messages`."""
    count = [0]

    def on_message(client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        client.ack(message.mid, message.qos)
        count[0] += 1
        if count[0] == messages:
            done()

    return on_message


def mqtt_preload(port: int, client_id: str, topic: str, messages: int, size: int) -> None:
    """Subscribe `client_id`'s persistent session, leave, and publish `messages` to it."""
    session = mqtt_connect(port, client_id)
    session.loop_start()
    session.subscribe(f"{topic}/+/telemetry", qos=1)
    time.sleep(0.3)
    session.disconnect()
    session.loop_stop()
    publisher = mqtt_connect(port, f"publisher-{uuid.uuid4().hex[:8]}")
    publisher.loop_start()
    sent = []
    for index in range(messages):
        vin, body = payload(size, index)
        sent.append(publisher.publish(f"{topic}/{vin}/telemetry", body, qos=1))
    for info in sent:
        info.wait_for_publish(60)
    publisher.disconnect()
    publisher.loop_stop()


def mqtt_bare(port: int, client_id: str, messages: int) -> float:
    """Seconds a paho client takes to receive and acknowledge `messages` from its session."""
    done = threading.Event()
    started = span_start()
    client = mqtt_connect(port, client_id, manual_ack=True)
    client.on_message = acknowledging(messages, done.set)
    client.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"bare MQTT consumer got fewer than {messages}")
    elapsed = span_end(started)
    client.disconnect()
    client.loop_stop()
    return elapsed


def mqtt_bare_on_loop(port: int, client_id: str, messages: int) -> float:
    """Seconds a paho client served by the event loop (PahoOnLoop, as in the bridge) takes
    to receive and acknowledge `messages` from its session."""
    async def main() -> float:
        done, stop = asyncio.Event(), asyncio.Event()
        started = span_start()
        client, properties = mqtt_client(client_id, manual_ack=True)
        client.on_message = acknowledging(messages, done.set)
        client.connect_async("127.0.0.1", port, clean_start=False, properties=properties)
        paho = PahoOnLoop(client, "bench")
        serving = asyncio.create_task(paho.serve(stop))
        await asyncio.wait_for(done.wait(), 600)
        elapsed = span_end(started)
        stop.set()
        await serving
        await paho.disconnect()
        return elapsed

    return asyncio.run(main())


def mqtt_bridge(port: int, client_id: str, topic: str, writer: RawWriter, raw: str,
                messages: int) -> float:
    bridge = MqttBridge("bench", raw, {"url": f"mqtt://127.0.0.1:{port}",
                                       "topic": f"{topic}/+/telemetry", "vin_topic_level": 1,
                                       "client_id": client_id}, "sources.bench.mqtt")
    return timed_bridge(bridge, writer, messages)


# --- AMQP --------------------------------------------------------------------------------
async def amqp_preload(url: str, queue_name: str, messages: int, size: int) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(queue_name, durable=True)
        for index in range(messages):
            vin, body = payload(size, index)
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers={"vin": vin}), routing_key=queue_name)
        while (await channel.declare_queue(queue_name, passive=True)
               ).declaration_result.message_count < messages:
            await asyncio.sleep(0.1)


async def amqp_bare(url: str, queue_name: str, messages: int) -> float:
    done, count = asyncio.Event(), [0]

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        count[0] += 1
        if count[0] >= messages:
            done.set()

    started = span_start()
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await channel.get_queue(queue_name)
        await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 600)
        elapsed = span_end(started)
        await queue.delete(if_unused=False, if_empty=False)
    return elapsed


async def amqp_bare_pika(url: str, queue_name: str, messages: int) -> float:
    """Seconds pika's asyncio adapter (the bridge's client) takes to consume `messages`."""
    done, count = asyncio.Event(), [0]

    def on_message(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        count[0] += 1
        if count[0] >= messages:
            done.set()

    def on_channel(channel: Any) -> None:
        channel.basic_qos(prefetch_count=500,
                          callback=lambda _: channel.basic_consume(queue_name, on_message))

    started = span_start()
    closed = asyncio.Event()
    connection = AsyncioConnection(
        pika.URLParameters(url), custom_ioloop=asyncio.get_running_loop(),
        on_open_callback=lambda opened: opened.channel(on_open_callback=on_channel),
        on_close_callback=lambda _connection, _reason: closed.set())
    await asyncio.wait_for(done.wait(), 600)
    elapsed = span_end(started)
    connection.close()
    await closed.wait()
    await amqp_drop(url, queue_name)
    return elapsed


# --- Kafka -------------------------------------------------------------------------------
def kafka_only(writer: RawWriter, messages: int, size: int, window: int = 500) -> float:
    """Seconds RawWriter takes to write `messages` (acks=all) with at most `window`
    unacknowledged, as a bridge does, without any source: the Kafka side's ceiling."""
    raw = f"raw.bench-{uuid.uuid4().hex[:8]}"
    writer.ensure_topics([raw])
    records = [payload(size, index) for index in range(messages)]

    async def main() -> float:
        started = span_start()
        unacked: deque[asyncio.Future[None]] = deque()
        for vin, body in records:
            if len(unacked) >= window:
                await unacked.popleft()
            unacked.append(writer.submit(raw, body, vin.encode()))
        await asyncio.gather(*unacked)
        return span_end(started)

    return asyncio.run(main())


# --- both --------------------------------------------------------------------------------
def timed_bridge(bridge: Any, writer: RawWriter, messages: int) -> float:
    """Seconds from starting `bridge` until Kafka acknowledged `messages` records."""
    async def main() -> float:
        metrics, stop = IngestMetrics(), asyncio.Event()
        written = metrics.records.labels(source="bench", via=bridge.KIND)
        started = span_start()
        task = asyncio.create_task(bridge.run(writer, metrics, stop))
        while written._value.get() < messages:
            if task.done():
                task.result()
                raise RuntimeError("the bridge stopped early")
            await asyncio.sleep(0.005)
        elapsed = span_end(started)
        stop.set()
        await task
        return elapsed

    return asyncio.run(main())


#: process CPU seconds (all threads: paho's, librdkafka's) of the last timed span
_last_cpu = [0.0]


def span_start() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def span_end(started: tuple[float, float]) -> float:
    """Seconds since `started`; its CPU seconds go to _last_cpu."""
    _last_cpu[0] = time.process_time() - started[1]
    return time.perf_counter() - started[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--bytes", type=int, default=600, help="payload size")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--bridges", nargs="+", choices=("mqtt", "amqp"),
                        default=["mqtt", "amqp"])
    parser.add_argument("--bootstrap", help="a Kafka other than `fleetstream dev`'s")
    args = parser.parse_args(argv)
    bootstrap = args.bootstrap
    if bootstrap is None:
        kafka = Kafka()
        if not kafka.running():
            raise SystemExit("Kafka is not running: fleetstream dev up kafka")
        bootstrap = kafka.bootstrap
    writer = RawWriter(bootstrap)
    #: (bridge, run) -> (seconds, CPU seconds), runs of one bridge alternated
    results: dict[tuple[str, str], tuple[float, float]] = {}
    n = args.messages
    results.update(alternated(args.repeat, "kafka", {
        "RawWriter only": lambda: kafka_only(writer, n, args.bytes)}))
    if "mqtt" in args.bridges:
        broker = BenchMosquitto(free_port(), name="mosquitto-bench")
        for _ in running_service(broker):
            def mqtt_run(consume: Callable[[int, str, str], float]) -> Callable[[], float]:
                def run() -> float:
                    client_id = f"bench-{uuid.uuid4().hex[:8]}"
                    topic = f"bench/{uuid.uuid4().hex[:8]}"
                    mqtt_preload(broker.port, client_id, topic, n, args.bytes)
                    return consume(broker.port, client_id, topic)
                return run

            def bridge(port: int, client_id: str, topic: str) -> float:
                raw = f"raw.bench-{uuid.uuid4().hex[:8]}"
                writer.ensure_topics([raw])
                return mqtt_bridge(port, client_id, topic, writer, raw, n)

            results.update(alternated(args.repeat, "mqtt", {
                "bare, paho thread": mqtt_run(lambda port, cid, _: mqtt_bare(port, cid, n)),
                "bare, paho on loop": mqtt_run(
                    lambda port, cid, _: mqtt_bare_on_loop(port, cid, n)),
                "bridge": mqtt_run(bridge)}))
    if "amqp" in args.bridges:
        for rabbit in running_service(RabbitMQService()):
            def amqp_run(consume: Callable[[str], float]) -> Callable[[], float]:
                def run() -> float:
                    queue = f"bench-{uuid.uuid4().hex[:8]}"
                    asyncio.run(amqp_preload(rabbit.url, queue, n, args.bytes))
                    return consume(queue)
                return run

            def amqp_bridge(queue: str) -> float:
                raw = f"raw.bench-{uuid.uuid4().hex[:8]}"
                writer.ensure_topics([raw])
                bridge = AmqpBridge("bench", raw, {"url": rabbit.url.replace("guest:guest@",
                                                                               "guest@"),
                                                   "queue": queue, "vin_header": "vin",
                                                   "password_env": "BENCH_AMQP_PASSWORD"},
                                    "sources.bench.amqp", environ={"BENCH_AMQP_PASSWORD": "guest"})
                elapsed = timed_bridge(bridge, writer, n)
                asyncio.run(amqp_drop(rabbit.url, queue))
                return elapsed

            results.update(alternated(args.repeat, "amqp", {
                "bare, aio-pika": amqp_run(lambda q: asyncio.run(amqp_bare(rabbit.url, q, n))),
                "bare, pika asyncio": amqp_run(
                    lambda q: asyncio.run(amqp_bare_pika(rabbit.url, q, n))),
                "bridge": amqp_run(amqp_bridge)}))
    writer.close()
    print(f"{n} messages of {args.bytes} bytes, best of {args.repeat}; "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{'bridge':<8}{'run':<22}{'msg/s':>10}{'CPU µs/msg':>12}")
    for (kind, run), (seconds, cpu) in results.items():
        print(f"{kind:<8}{run:<22}{n / seconds:>10,.0f}{cpu / n * 1e6:>12,.0f}")


def alternated(repeat: int, kind: str, runs: dict[str, Callable[[], float]]
               ) -> dict[tuple[str, str], tuple[float, float]]:
    """Each of `runs` `repeat` times, taking turns (so load changes hit all alike): the
    fewest seconds and the least CPU seconds of each."""
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            seen[name].append((run(), _last_cpu[0]))
    return {(kind, name): (min(wall for wall, _ in taken), min(cpu for _, cpu in taken))
            for name, taken in seen.items()}


async def amqp_drop(url: str, queue_name: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await (await channel.get_queue(queue_name)).delete(if_unused=False, if_empty=False)


if __name__ == "__main__":
    main()
