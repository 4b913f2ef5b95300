"""Geofence events in the streaming job's shape (DirectRunner, TestStream): the keyed step's
state across bundles, approvals, the application's sink, and the Redis streams."""
from __future__ import annotations

import glob
from pathlib import Path

import apache_beam as beam
import fakeredis
import orjson
import pytest
import redis
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from fleetstream.io.redis.geofence_streams import append_events, stream_key
from fleetstream.pipelines.fleet import DeliverFleet
from fleetstream.schemas.config import Config
from fleetstream.schemas.delivery import Record
from fleetstream.schemas.document import document_json
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.schemas.geofences import geofence_event
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.settings.config import parse_config
from fleetstream.transforms.geofence_events import GeofenceEvents
from fleetstream.transforms.order_and_permit_keyed import OrderAndPermitKeyed
from tests.test_geofence_replay import DEPOT, FENCES, T0, VIN_A, VIN_C, drive
from tests.test_geofences import destination

EXPECTED = [("depot", "enter"), ("depot", "exit"), ("yard", "enter"), ("yard", "exit")]


def streaming() -> PipelineOptions:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def config(out: Path) -> Config:
    return parse_config({"applications": [
        {"id": "fleet", "permissions": ["vehicle_location.coordinates"],
         "sink": {"type": "file", "path": str(out), "max_delay": 0.1}, "geofences": FENCES}],
        "activations": [{"vin": VIN_A, "application_id": "fleet", "status": "approved",
                         "at": 1}]})


def envelopes() -> list[RawEnvelope]:
    west = destination(*DEPOT, 270, 1_000)
    lines = drive(VIN_A, west, 90, 60, 50) + drive(VIN_C, west, 90, 60, 50)
    return [RawEnvelope("tesla", T0 + i, orjson.loads(line)["payload"].encode())
            for i, line in enumerate(lines)]


def test_the_streaming_job_delivers_crossings_through_the_sink_and_to_redis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = fakeredis.FakeServer()
    monkeypatch.setattr(redis.Redis, "from_url",
                        classmethod(lambda cls, url, **kw: fakeredis.FakeRedis(server=server)))
    conf, raw = config(tmp_path / "out"), envelopes()
    # interleave the two cars, 10 envelopes per list (a poll), one list per second
    raw = [e for pair in zip(raw[:60], raw[60:]) for e in pair]
    stream = (TestStream(output_tags={"envelopes", "events"})
              .advance_watermark_to(10, tag="envelopes").advance_watermark_to(10, tag="events")
              .add_elements([TimestampedValue(e, 10) for e in conf.activations], tag="events")
              .advance_watermark_to(11, tag="events"))
    for n in range(0, len(raw), 10):
        stream = (stream.add_elements([TimestampedValue(raw[n:n + 10], 11 + n)], tag="envelopes")
                  .advance_watermark_to(12 + n, tag="envelopes"))
    stream = (stream.advance_watermark_to_infinity(tag="envelopes")
              .advance_watermark_to_infinity(tag="events"))
    with TestPipeline(options=streaming()) as pipeline:
        streams = pipeline | stream
        permit = OrderAndPermitKeyed(conf.applications, streams["events"],
                                     reorder_window_s=0.5, cold_start_hold_s=0, shards=4)
        _ = streams["envelopes"] | DeliverFleet(conf.applications, permit, bounded=False,
                                                batches=True, redis_url="redis://fake/0")
    lines = [orjson.loads(line) for path in sorted(glob.glob(str(tmp_path / "out" / "*.jsonl")))
             for line in open(path, "rb") if line.strip()]
    events = sorted((e for e in lines if e.get("type") == "geofence"),
                    key=lambda e: (e["timestamp"], e["geofence_id"]))
    # VIN_C drove the same route unapproved: nothing of it
    assert [(e["vin"], e["geofence_id"], e["event"]) for e in events] == [
        (VIN_A, fence, event) for fence, event in EXPECTED]
    assert sum(1 for e in lines if "data" in e) == 60
    client = fakeredis.FakeRedis(server=server)
    for fence in ("depot", "yard"):
        entries = client.xrange(stream_key("fleet", fence))
        sent = [orjson.loads(fields[b"event"]) for _, fields in entries]
        assert sent == [e for e in events if e["geofence_id"] == fence]
        # one vehicle's crossings come in time order: each id is its event's time
        assert [entry_id.decode() for entry_id, _ in entries] == [
            f"{to_epoch_ms(e['timestamp'])}-0" for e in sent]


def document(vehicle: str, at_ms: int, lat: float, lon: float) -> tuple[str, Record]:
    data = {"vehicle_location": {"coordinates": [
        {"data": {"latitude": lat, "longitude": lon}, "timestamp": iso_ms(at_ms)}]}}
    return "fleet", Record(vehicle, f"m{at_ms}", at_ms,
                           document_json("fleet", vehicle, "tesla", f"m{at_ms}", data))


_OUT: list = []


def test_keyed_state_carries_fences_across_bundles_and_skips_late_locations() -> None:
    conf = config(Path("unused"))
    inside = DEPOT
    outside = destination(*DEPOT, 0, 1_000)
    stream = (TestStream()
              .advance_watermark_to(10)
              .add_elements([TimestampedValue([document("V", 1_000, *outside),
                                               document("V", 2_000, *inside)], 10)])
              .advance_watermark_to(11)
              # late: older than 2,000 and outside; ignored, so no exit
              .add_elements([TimestampedValue([document("V", 1_500, *outside)], 11)])
              .advance_watermark_to(12)
              .add_elements([TimestampedValue([document("V", 3_000, *inside),
                                               document("V", 4_000, *outside)], 12)])
              .advance_watermark_to_infinity())
    _OUT.clear()
    with TestPipeline(options=streaming()) as pipeline:
        _ = (pipeline | stream
             | GeofenceEvents(conf.applications, shards=2, batches=True)
             | beam.FlatMap(lambda pairs: pairs)
             | beam.Map(lambda pair: _OUT.append(pair)))
    assert [(app, r.vin, r.event_ms, orjson.loads(r.document)["event"]) for app, r in _OUT] == [
        ("fleet", "V", 2_000, "enter"), ("fleet", "V", 4_000, "exit")]


def event_pair(fence: str, at_ms: int, event: str = "enter") -> tuple[str, Record]:
    return "fleet", Record("V", f"id-{at_ms}", at_ms,
                           geofence_event("fleet", "V", fence, event, at_ms, 1.0, 2.0))


def test_stream_ids_follow_event_time_and_never_go_back() -> None:
    client, newest = fakeredis.FakeRedis(), {}
    append_events(client, [event_pair("depot", 5_000), event_pair("depot", 5_000, "exit"),
                           event_pair("yard", 4_000)], newest=newest)
    # older than the stream's newest: takes the newest's milliseconds, in order
    append_events(client, [event_pair("depot", 3_000), event_pair("depot", 9_000)],
                  newest=newest)
    depot = stream_key("fleet", "depot")
    assert [i.decode() for i, _ in client.xrange(depot)] == [
        "5000-0", "5000-1", "5000-2", "9000-0"]
    assert [orjson.loads(f[b"event"])["timestamp"] for _, f in client.xrange(depot)] == [
        iso_ms(5_000), iso_ms(5_000), iso_ms(3_000), iso_ms(9_000)]
    assert [i.decode() for i, _ in client.xrange(stream_key("fleet", "yard"))] == ["4000-0"]
    # another writer (no shared memory of the newest id) went ahead: still monotonic
    append_events(client, [event_pair("depot", 8_000), event_pair("depot", 9_500)])
    ids = [tuple(map(int, i.decode().split("-"))) for i, _ in client.xrange(depot)]
    assert ids == sorted(ids) and len(ids) == 6 and ids[-2:] == [(9_500, 0), (9_500, 1)]
