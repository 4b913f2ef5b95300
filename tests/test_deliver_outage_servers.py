"""A real sink outage in a running streaming job (DirectRunner, wall-clock time).

Two applications: `live` writes to a Mosquitto of the test's own, which is stopped for
10 s while the job runs; `files` writes to a file sink. During the outage `files` keeps
receiving its documents; after it every `live` document reaches the broker's
subscriber, each vehicle's in order, a copy only ever with the same `message_id`.

Documents come through the local Pub/Sub emulator (a topic of the test's own), which the
DirectRunner reads in real time with processing-time timers (its `PeriodicImpulse`
cannot be combined with timers: "_GroupByKeyOnly was not replaced as expected").
"""
from __future__ import annotations

import glob
import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

import apache_beam as beam
import orjson
import paho.mqtt.client as mqtt
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from fleetstream.dev.mosquitto import MosquittoService
from fleetstream.io.sinks.registry import application_sink
from fleetstream.schemas.delivery import Record
from fleetstream.settings.config import parse_config
from fleetstream.transforms.deliver import Deliver
from fleetstream.transforms.delivery_retry import RetryPolicy
from tests.helpers import free_port

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]
pytestmark = pytest.mark.servers

VINS = ("V0", "V1", "V2", "V3")
TICK_S = 0.1           # one document per application every tick: 10 a second each
RUN_S = 26.0
DOWN_AT_S, UP_AT_S = 5.0, 15.0
DEAD: list[dict] = []


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


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MosquittoService]:
    monkeypatch.setenv("FLEETSTREAM_HOME", str(tmp_path / "home"))
    service = PersistentMosquitto(free_port(), name="mosquitto-outage")
    service.start()
    yield service
    service.stop()


def documents(message: bytes) -> list[tuple[str, Record]]:
    """The tick's document for each application; a tick is `<number> <send time>`."""
    tick, sent = message.split()
    vin = VINS[int(tick) % len(VINS)]
    received_ms = round(float(sent) * 1000)
    return [(app, Record(vin, f"{app}-{int(tick):04d}", received_ms,
                         orjson.dumps({"app": app, "tick": int(tick), "vin": vin,
                                       "sent": float(sent), "brand": "tesla"}), received_ms))
            for app in ("live", "files")]


def feed(publisher, topic: str, ticks: int, started: float) -> None:
    """One tick every TICK_S from `started`."""
    for tick in range(ticks):
        time.sleep(max(0.0, started + tick * TICK_S - time.time()))
        publisher.publish(topic, f"{tick} {time.time()}".encode())


def _keep_dead(letter: dict) -> None:
    DEAD.append(letter)


def outage(service: MosquittoService, started: float) -> None:
    time.sleep(max(0.0, started + DOWN_AT_S - time.time()))
    service.stop()
    time.sleep(max(0.0, started + UP_AT_S - time.time()))
    service.start()


def test_a_stopped_broker_holds_only_its_application(broker, pubsub_service, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_service.host)
    from google.cloud import pubsub_v1
    run = uuid.uuid4().hex[:8]
    publisher, subscriptions = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path("fleetstream-test", f"outage-{run}")
    publisher.create_topic(name=topic)
    source = subscriptions.subscription_path("fleetstream-test", f"outage-{run}")
    subscriptions.create_subscription(name=source, topic=topic)
    apps = parse_config({"applications": [
        {"id": "live", "permissions": ["diagnostics.*"],
         "sink": {"type": "mqtt", "host": "127.0.0.1", "port": broker.port,
                  "topic": "live/fleetstream/{application_id}/{vin}", "timeout": 5,
                  "max_delay": 0.2}},
        {"id": "files", "permissions": ["diagnostics.*"],
         "sink": {"type": "file", "path": str(tmp_path / "files"), "max_delay": 0.2}}]}
    ).applications
    subscriber = SessionSubscriber(broker.port, "live/fleetstream/live/#")
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | beam.io.ReadFromPubSub(subscription=source)
         | beam.FlatMap(documents)
         | Deliver(apps, application_sink,
                   RetryPolicy(initial_backoff_s=0.5, max_backoff_s=2, max_elapsed_s=120), shards=2)
         | beam.Map(_keep_dead))
    result = pipeline.run()
    ticks = round(RUN_S / TICK_S)
    started = time.time() + 3          # the DirectRunner takes a few seconds to start
    stopper = threading.Thread(target=outage, args=(broker, started), daemon=True)
    stopper.start()
    try:
        feed(publisher, topic, ticks, started)
        stopper.join()
        deadline = time.monotonic() + 20
        while len({m.payload for m in subscriber.messages}) < ticks and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)                   # the files' last batch
    finally:
        result.cancel()
        subscriber.close()
        subscriptions.delete_subscription(subscription=source)
        publisher.delete_topic(topic=topic)

    assert DEAD == []
    # files: the documents sent during the outage were written during it
    written_at, sent, files_order = {}, {}, defaultdict(list)
    for path in sorted(glob.glob(str(tmp_path / "files" / "*.jsonl")), key=os.path.getmtime):
        for line in Path(path).read_bytes().splitlines():
            document = orjson.loads(line)
            written_at[document["tick"]] = os.path.getmtime(path)
            sent[document["tick"]] = document["sent"]
            files_order[document["vin"]].append(document["tick"])
    assert sorted(written_at) == list(range(ticks))
    in_outage = [tick for tick, at in sent.items()
                 if started + DOWN_AT_S <= at < started + UP_AT_S - 3]
    assert len(in_outage) >= 50
    late = [tick for tick in in_outage if written_at[tick] >= started + UP_AT_S]
    assert late == [], f"{len(late)} of {len(in_outage)} file documents waited for the outage"
    # live: everything arrives after the outage, in order per vehicle (the order the job
    # read them in, which the file sink shows: Pub/Sub does not keep the publishing order),
    # copies identical
    payloads = [orjson.loads(m.payload) for m in subscriber.messages]
    assert {p["tick"] for p in payloads} == set(written_at)
    first_seen: dict[str, list[int]] = defaultdict(list)
    for p in payloads:
        if p["tick"] not in first_seen[p["vin"]]:
            first_seen[p["vin"]].append(p["tick"])
    assert first_seen == files_order
    copies = Counter(m.payload for m in subscriber.messages)
    assert len(copies) == len({p["tick"] for p in payloads})   # a copy has the same bytes
    assert any(DOWN_AT_S <= p["tick"] * TICK_S < UP_AT_S for p in payloads)
