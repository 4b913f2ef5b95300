"""DeliverFleet with `batches=True` (the streaming job's shape): lists in, every document out.

Both permit steps: the keyed join (`OrderAndPermitKeyed`, streaming, on a TestStream) and the
side-input one (`PermitByActivation`, here on bounded input with a static table), each
against the documents the same functions make in a plain loop.
"""
from __future__ import annotations

import glob
from pathlib import Path

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from fleetstream.mappers import MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED
from fleetstream.pipelines.fleet import DeliverFleet
from fleetstream.schemas.config import Config
from fleetstream.schemas.document import message_id
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.settings.config import parse_config
from fleetstream.simulator import fleet_vins, simulate
from fleetstream.transforms.activations import approved_table, newest_activations
from fleetstream.transforms.order_and_permit_keyed import OrderAndPermitKeyed
from fleetstream.transforms.permissions import permitted_data
from fleetstream.transforms.permit_by_activation import PermitByActivation

VEHICLES = 12
APP = "fleet"


def config(out: Path) -> Config:
    vins = fleet_vins(VEHICLES, seed=5)
    return parse_config({
        "applications": [{"id": APP, "permissions": ["diagnostics.*", "charging.*"],
                          "sink": {"type": "file", "path": str(out), "max_delay": 0.1}}],
        # two vehicles never approved: their messages are filtered
        "activations": [{"vin": vin, "application_id": APP, "status": "approved", "at": 1}
                        for vin in vins[2:]]})


def envelopes() -> list[RawEnvelope]:
    return [RawEnvelope(e["source"], 1_000 + i, e["payload"].encode())
            for i, e in enumerate(simulate(VEHICLES, messages=300, seed=5, error_rate=0.05,
                                           duplicate_rate=0))]


def expected_ids(conf: Config, raw: list[RawEnvelope]) -> set[str]:
    """The documents the plain per-message work makes."""
    table = approved_table(newest_activations(conf.activations))
    [app] = conf.applications
    ids = set()
    for envelope in raw:
        result = MAPPERS[envelope.source](envelope.payload, envelope.received_at_ms)
        if result.outcome in (FAILED, IGNORED) or APP not in table.get(result.vin, ()):
            continue
        if permitted_data(result.data, app.permitted):
            ids.add(message_id(envelope.source_message_id(), APP))
    return ids


def delivered_ids(out: Path) -> list[str]:
    return [orjson.loads(line)["message_id"] for path in sorted(glob.glob(f"{out}/*.jsonl"))
            for line in open(path, "rb") if line.strip()]


def lists(raw: list[RawEnvelope], size: int = 25) -> list[list[RawEnvelope]]:
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def test_the_keyed_join_delivers_every_permitted_document_from_lists(tmp_path: Path) -> None:
    conf, raw = config(tmp_path / "out"), envelopes()
    events = [TimestampedValue(e, 10) for e in conf.activations]
    stream = (TestStream(output_tags={"envelopes", "events"})
              .advance_watermark_to(10, tag="envelopes").advance_watermark_to(10, tag="events")
              .add_elements(events, tag="events")
              .advance_watermark_to(11, tag="events"))
    for n, batch in enumerate(lists(raw)):
        stream = stream.add_elements([TimestampedValue(batch, 11 + n)], tag="envelopes")
    stream = (stream.advance_watermark_to_infinity(tag="envelopes")
              .advance_watermark_to_infinity(tag="events"))
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as pipeline:
        streams = pipeline | stream
        permit = OrderAndPermitKeyed(conf.applications, streams["events"],
                                     reorder_window_s=0.5, cold_start_hold_s=0, shards=4)
        _ = streams["envelopes"] | DeliverFleet(conf.applications, permit, bounded=False,
                                                batches=True)
    delivered = delivered_ids(tmp_path / "out")
    assert len(delivered) == len(set(delivered))
    assert set(delivered) == expected_ids(conf, raw) and delivered


def test_the_side_input_join_delivers_every_permitted_document_from_lists(
        tmp_path: Path) -> None:
    conf, raw = config(tmp_path / "out"), envelopes()
    with TestPipeline() as pipeline:
        table = pipeline | "Table" >> beam.Create(
            [approved_table(newest_activations(conf.activations))])
        _ = (pipeline
             | "Lists" >> beam.Create(lists(raw))
             | DeliverFleet(conf.applications, PermitByActivation(conf.applications, table),
                            batches=True))
    delivered = delivered_ids(tmp_path / "out")
    assert len(delivered) == len(set(delivered))
    assert set(delivered) == expected_ids(conf, raw) and delivered


def test_mapping_that_prepares_the_data_delivers_the_same_bytes(tmp_path: Path) -> None:
    """`mapped_out=False` (a replay without a state store): the permitted JSON made as each
    message is mapped, no separate prepare step, and no mapped output; the same documents,
    byte for byte, and the same counters."""
    raw = envelopes()
    documents, counters = {}, {}
    for mapped_out in (True, False):
        out = tmp_path / str(mapped_out)
        conf = config(out)
        pipeline = TestPipeline()
        table = pipeline | "Table" >> beam.Create(
            [approved_table(newest_activations(conf.activations))])
        fleet = (pipeline
                 | "Lists" >> beam.Create(lists(raw))
                 | DeliverFleet(conf.applications, PermitByActivation(conf.applications, table),
                                batches=True, mapped_out=mapped_out))
        assert (fleet.mapped is None) == (not mapped_out)
        result = pipeline.run()
        result.wait_until_finish()
        documents[mapped_out] = sorted(line for path in glob.glob(f"{out}/*.jsonl")
                                       for line in open(path, "rb"))
        counters[mapped_out] = {
            (c.key.metric.name, c.committed) for c in result.metrics().query()["counters"]
            if c.key.metric.namespace == "fleetstream" and "latency_sum" not in c.key.metric.name}
    assert documents[False] == documents[True] and documents[True]
    assert counters[False] == counters[True] and counters[True]
