"""Geofence events from the streaming job on the local Flink cluster (the `servers` tier).

A car drives through a circle and a polygon; the application (pseudonymous ids) receives
exactly the four crossings through its file sink under its own id for the car, never the
VIN, and the same events land in the Redis streams. A car that is not approved drives the
same route and gives nothing.
"""
from __future__ import annotations

import glob
import time
import uuid
from pathlib import Path

import orjson
import pytest

from fleetstream.io.redis.geofence_streams import stream_key
from fleetstream.io.kafka.producer import produce_envelopes
from fleetstream.io.kafka.settings import KafkaSettings
from fleetstream.pipelines.stream import ensure_topics, submit_stream
from fleetstream.runtime import flink_jobs
from fleetstream.schemas.timestamps import iso_ms
from fleetstream.schemas.vehicle_ids import pseudonymous_id
from fleetstream.settings.config import parse_config
from fleetstream.settings.stream import FlinkSettings, OrderSettings, StreamSettings
from fleetstream.simulator import SOURCES
from tests.test_geofence_replay import DEPOT, FENCES, VIN_A, VIN_C, tesla_line
from tests.test_geofences import destination

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

REDIS_URL = "redis://127.0.0.1:6379/0"     # `fleetstream dev up`
SECRET = "geofence-flink-secret"


def test_the_streaming_job_delivers_crossings_under_the_applications_own_id(
        kafka_service, flink_cluster, tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379 (fleetstream dev up)")
    run = uuid.uuid4().hex[:8]
    app = f"geo-{run}"
    config = parse_config({
        "state": {"redis": REDIS_URL},
        "applications": [{"id": app, "permissions": ["vehicle_location.coordinates"],
                          "sink": {"type": "file", "path": str(tmp_path / app), "max_delay": 0.5},
                          "geofences": FENCES, "vehicle_ids": "pseudonymous",
                          "vehicle_id_secret_env": "GEO_SECRET"}],
        "activations": [{"vin": VIN_A, "application_id": app, "status": "approved", "at": 1}]},
        environ={"GEO_SECRET": SECRET})
    settings = StreamSettings(
        config,
        FlinkSettings(job_endpoint=flink_cluster.job_endpoint,
                      environment_config=flink_cluster.worker_pool, parallelism=2,
                      checkpointing_interval_ms=2000),
        KafkaSettings(kafka_service.bootstrap, f"test-{run}", "earliest",
                      flink_cluster.expansion_service, raw_reader="python"),
        {source: f"{run}.raw.{source}" for source in SOURCES}, f"{run}.activations",
        f"{run}.dead-letters", None, OrderSettings(reorder_window_s=0.5, dedupe_horizon_s=600),
        delivery_shards=2)
    ensure_topics(settings)
    known = tuple(flink_jobs.running_jobs())
    submit_stream(settings)
    flink_jobs.wait_running(known=known)
    start_ms = int(time.time() * 1000)
    west = destination(*DEPOT, 270, 1_000)
    keyed = []
    for i in range(60):        # 50 m every second, both cars
        point = destination(*west, 90, 50 * i)
        for vin in (VIN_A, VIN_C):
            keyed.append((vin, orjson.loads(tesla_line(vin, start_ms + 1000 * i, *point, 1000))))
    produce_envelopes(kafka_service.bootstrap, keyed, messages_per_s=20,
                      topic_of_source=settings.raw_topics)
    seen_as = pseudonymous_id(SECRET.encode(), VIN_A)
    expected = [(seen_as, "depot", "enter"), (seen_as, "depot", "exit"),
                (seen_as, "yard", "enter"), (seen_as, "yard", "exit")]

    def events() -> list[dict]:
        lines = [orjson.loads(line) for path in glob.glob(str(tmp_path / app / "*.jsonl"))
                 for line in open(path, "rb") if line.strip()]
        return sorted((e for e in lines if e.get("type") == "geofence"),
                      key=lambda e: (e["timestamp"], e["geofence_id"]))

    deadline = time.monotonic() + 180
    while len(events()) < 4 and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(3)               # anything more than expected would show up by now
    got = events()
    assert [(e["vin"], e["geofence_id"], e["event"]) for e in got] == expected
    assert got[0]["timestamp"] == iso_ms(start_ms + 14_000)      # 300 m west of the depot
    written = b"".join(Path(p).read_bytes() for p in glob.glob(str(tmp_path / app / "*")))
    assert VIN_A.encode() not in written and VIN_C.encode() not in written
    for fence in ("depot", "yard"):
        streamed = [orjson.loads(fields[b"event"])
                    for _, fields in client.xrange(stream_key(app, fence))]
        # at least once: a restarted bundle may append again, with the same message_id
        assert {e["message_id"] for e in streamed} == \
            {e["message_id"] for e in got if e["geofence_id"] == fence}
        client.delete(stream_key(app, fence))
