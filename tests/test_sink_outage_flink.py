"""A sink outage under the streaming job on the Flink cluster (issue #19), about 3 minutes.

The job of tests/test_stream_flink.py, with its `insurer` application writing to a
Mosquitto of the test's own instead of files. Messages flow at 20 a second for 100 s;
the broker is stopped for 60 s in the middle. The `fleet` application (a file sink)
keeps receiving during the outage with its usual latency; after it every `insurer`
document reaches the broker's subscriber, each vehicle's in order, and nothing is
dead-lettered.
"""
from __future__ import annotations

import dataclasses
import statistics
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from fleetstream.io.sinks.registry import build_sink
from fleetstream.runtime import flink_jobs
from fleetstream.schemas.document import message_id
from fleetstream.schemas.envelope import source_message_id
from fleetstream.schemas.timestamps import to_epoch_ms
from fleetstream.simulator import simulate_keyed
from tests.helpers import free_port
from tests.test_deliver_outage_servers import PersistentMosquitto, SessionSubscriber
from tests.test_stream_flink import SEED, VEHICLES, StreamEnv, expected, wait_for

pytest_plugins = ["fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

RATE = 20             # messages a second
MESSAGES = 2000       # 100 s of them
DOWN_AT_S, OUTAGE_S = 20.0, 60.0


def _with_mqtt_insurer(env: StreamEnv, port: int) -> None:
    """The insurer writes to the broker on `port`, one topic per vehicle."""
    options = {"type": "mqtt", "host": "127.0.0.1", "port": port, "max_delay": 0.5,
               "topic": "live/fleetstream/{application_id}/{vin}"}
    _, batching = build_sink("insurer", options)
    applications = tuple(dataclasses.replace(a, sink_options=options, batching=batching)
                         if a.id == "insurer" else a for a in env.config.applications)
    env.config = dataclasses.replace(env.config, applications=applications)
    env.settings = dataclasses.replace(env.settings, config=env.config)


def _outage(broker: PersistentMosquitto, started: float) -> None:
    time.sleep(max(0.0, started + DOWN_AT_S - time.time()))
    broker.stop()
    time.sleep(max(0.0, started + DOWN_AT_S + OUTAGE_S - time.time()))
    broker.start()


def test_a_stopped_broker_holds_only_its_application(kafka_service, flink_cluster,
                                                     tmp_path: Path) -> None:
    broker = PersistentMosquitto(free_port(), name=f"mosquitto-outage-{uuid.uuid4().hex[:6]}")
    broker.start()
    subscriber = SessionSubscriber(broker.port, "live/fleetstream/insurer/#")
    env = StreamEnv(kafka_service.bootstrap, flink_cluster, tmp_path / "stream")
    _with_mqtt_insurer(env, broker.port)
    job = env.submit()
    try:
        started = time.time()
        stopper = threading.Thread(target=_outage, args=(broker, started), daemon=True)
        stopper.start()
        env.produce(simulate_keyed(VEHICLES, messages=MESSAGES, rate=1.0, seed=SEED,
                                   error_rate=0, duplicate_rate=0,
                                   start_ms=int(time.time() * 1000)), messages_per_s=RATE)
        stopper.join()
        documents, _ = expected(env.sent, env.approved, env.config)
        fleet_ids = {i for a, i in documents if a == "fleet"}
        insurer_ids = {i for a, i in documents if a == "insurer"}

        def received() -> list[dict]:
            return [orjson.loads(m.payload) for m in list(subscriber.messages)]

        wait_for(lambda: fleet_ids <= {d["message_id"] for d in env.documents()["fleet"]}
                 and insurer_ids <= {d["message_id"] for d in received()},
                 timeout_s=120, what="every document of both applications")
    finally:
        flink_jobs.cancel(job)
        subscriber.close()
        broker.stop()

    # fleet: sent while the broker was down, written while it was down, with normal latency
    sent_at = {message_id(source_message_id(e["source"], e["payload"].encode()), "fleet"): e["at"]
               for e in env.sent}
    down, up = started + DOWN_AT_S, started + DOWN_AT_S + OUTAGE_S
    waits = []
    for path in (tmp_path / "stream" / "fleet").glob("*.jsonl"):
        written = path.stat().st_mtime
        for line in path.read_bytes().splitlines():
            sent = sent_at.get(orjson.loads(line)["message_id"])
            if sent is not None and down + 5 <= sent <= up - 15:
                waits.append(written - sent)
    assert len(waits) > 100
    assert max(waits) < 15, f"fleet documents waited up to {max(waits):.0f} s during the outage"
    print(f"fleet during the outage: {len(waits)} documents, median wait "
          f"{statistics.median(waits):.1f} s, max {max(waits):.1f} s")
    # insurer: everything after the outage, each vehicle in order, copies identical
    payloads = received()
    assert {d["message_id"] for d in payloads} == insurer_ids
    copies: dict[str, set[bytes]] = defaultdict(set)
    for message in subscriber.messages:
        copies[orjson.loads(message.payload)["message_id"]].add(message.payload)
    assert all(len(versions) == 1 for versions in copies.values())
    newest_seen: dict[str, int] = defaultdict(int)
    for document in payloads:
        stamp = max(to_epoch_ms(e["timestamp"]) for props in document["data"].values()
                    for entries in props.values() for e in entries)
        if not document.get("late"):
            assert stamp >= newest_seen[document["vin"]], document["vin"]
            newest_seen[document["vin"]] = stamp
    assert not [d for d in env.dead_letters() if d.get("stage") == "deliver"]
