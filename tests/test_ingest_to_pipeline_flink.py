"""End to end: OEM data through the ingest gateway into the streaming job, out of a sink.

Smartcar pushes signed HTTP requests, Mercedes pushes with a bearer token, BMW streams
over MQTT and Tesla's records come off an AMQP queue; `fleetstream ingest` (in-process)
writes them to the job's raw topics, and the streaming job on the local Flink cluster
maps, orders, permits and delivers them. Every document the pure mappers and the
permission rule say is due must reach the applications' file sinks.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
import urllib.request
import uuid
from typing import Iterator

import aio_pika
import paho.mqtt.client as mqtt
import pytest

from fleetstream.ingest.service import serve
from fleetstream.settings.ingest import IngestSettings, parse_ingest_settings
from fleetstream.simulator import simulate_keyed
from tests.helpers import free_port
from tests.test_stream_flink import (SEED, VEHICLES, StreamEnv, delivered_ids, expected, missing,
                                     wait_for)

pytest_plugins = ["fleetstream.dev.pytest_plugin", "fleetstream.dev.sink_pytest_plugin"]

SECRET, TOKEN = "smartcar-secret", "mercedes-token"


class RunningGateway:
    """`fleetstream ingest`'s serve() on an event loop of its own, in a thread."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(
            target=lambda: self._loop.run_until_complete(serve(settings, self._stop)),
            daemon=True)

    def __enter__(self) -> "RunningGateway":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def gateway_env(kafka_service, flink_cluster, mosquitto_service, rabbitmq_service, tmp_path,
                monkeypatch) -> Iterator[tuple[StreamEnv, RunningGateway, str, str]]:
    env = StreamEnv(kafka_service.bootstrap, flink_cluster, tmp_path / "stream")
    run = uuid.uuid4().hex[:8]
    queue = f"{run}.tesla"
    mqtt_prefix = f"{run}/bmw"
    monkeypatch.setenv("E2E_SC_SECRET", SECRET)
    monkeypatch.setenv("E2E_MB_TOKEN", TOKEN)
    monkeypatch.setenv("E2E_AMQP_PASSWORD", "guest")

    async def declare() -> None:
        async with await aio_pika.connect(rabbitmq_service.url) as connection:
            await (await connection.channel()).declare_queue(queue, durable=True)
    asyncio.run(declare())
    port = free_port()
    settings = parse_ingest_settings({
        "kafka": {"bootstrap": kafka_service.bootstrap},
        "http": {"listen": f"127.0.0.1:{port}"},
        "sources": {
            "smartcar": {"topic": env.raw_topics["smartcar"], "push": {"auth": {
                "type": "hmac-sha256", "header": "SC-Signature", "secret_env": "E2E_SC_SECRET"}}},
            "mercedes": {"topic": env.raw_topics["mercedes"], "push": {"auth": {
                "type": "bearer", "token_env": "E2E_MB_TOKEN"}}},
            "bmw": {"topic": env.raw_topics["bmw"], "mqtt": {
                "url": f"mqtt://127.0.0.1:{mosquitto_service.port}",
                "topic": f"{mqtt_prefix}/+/telemetry", "client_id": f"e2e-{run}",
                "vin_topic_level": 2}},
            "tesla": {"topic": env.raw_topics["tesla"], "amqp": {
                "url": f"amqp://guest@127.0.0.1:{rabbitmq_service.port}/", "queue": queue,
                "password_env": "E2E_AMQP_PASSWORD", "vin_header": "vin"}}}})
    env.job = env.submit()
    with RunningGateway(settings) as gateway:
        time.sleep(3)                    # the MQTT bridge has subscribed, the listener is up
        yield env, gateway, mqtt_prefix, queue


def test_pushes_mqtt_and_amqp_messages_become_the_applications_documents(
        gateway_env, mosquitto_service, rabbitmq_service) -> None:
    env, gateway, mqtt_prefix, queue = gateway_env
    http = gateway.settings.http
    messages = list(simulate_keyed(VEHICLES, messages=120, rate=1.0, seed=SEED, error_rate=0.05,
                                   duplicate_rate=0, start_ms=int(time.time() * 1000)))
    by_source: dict[str, list[tuple[str, bytes]]] = {}
    for vin, envelope in messages:
        by_source.setdefault(envelope["source"], []).append((vin, envelope["payload"].encode()))
        env.sent.append({**envelope, "vin": vin, "at": time.time()})
    assert set(by_source) == {"smartcar", "mercedes", "bmw", "tesla"}

    for vin, body in by_source["smartcar"]:
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        push(http.port, f"/v1/push/smartcar/{vin}", body, {"SC-Signature": signature})
    for vin, body in by_source["mercedes"]:
        push(http.port, f"/v1/push/mercedes/{vin}", body, {"Authorization": f"Bearer {TOKEN}"})

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", mosquitto_service.port)
    client.loop_start()
    for info in [client.publish(f"{mqtt_prefix}/{vin}/telemetry", body, qos=1)
                 for vin, body in by_source["bmw"]]:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()

    async def enqueue() -> None:
        async with await aio_pika.connect(rabbitmq_service.url) as connection:
            channel = await connection.channel()
            for vin, body in by_source["tesla"]:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, headers={"vin": vin}), routing_key=queue)
    asyncio.run(enqueue())

    documents, _ = expected(env.sent, env.approved, env.config)
    assert documents
    wait_for(lambda: documents <= delivered_ids(env),
             what=missing(env, documents, "documents of the ingested messages"))
    assert delivered_ids(env) == documents


def push(port: int, path: str, body: bytes, headers: dict[str, str]) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                     headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
