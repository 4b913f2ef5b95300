"""Formats, path templates and option checks shared by the object-store sinks."""
from __future__ import annotations

import gzip
import io

import orjson
import pytest

from fleetstream.io.sinks.object.format import (AvroContainer, JsonLines, ObjectLayout,
                                                read_avro_documents)
from fleetstream.schemas.document import document_json
from fleetstream.schemas.errors import ConfigError, PermanentWriteError

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]

WHERE = "applications[fleet-a].sink"


def documents(batch):
    return [orjson.loads(r.document) for r in batch.records]


def test_default_name_is_partitioned_by_event_hour_and_named_by_content(make_batch):
    batch = make_batch()
    layout = ObjectLayout.from_options(WHERE, {})
    assert layout.name(batch) == f"fleet-a/2026/03/01/08/{batch.batch_id}.jsonl"


def test_prefix_template_and_extension(make_batch):
    batch = make_batch()
    layout = ObjectLayout.from_options(WHERE, {"prefix": "/raw/", "format": "avro",
                                               "path_template": "{yyyy}{mm}{dd}-{batch_id}"})
    assert layout.name(batch) == f"raw/20260301-{batch.batch_id}.avro"
    gz = ObjectLayout.from_options(WHERE, {"gzip": True})
    assert gz.name(batch).endswith(".jsonl.gz")


def test_jsonl_body_is_the_documents_and_gzip_is_deterministic(make_batch):
    batch = make_batch()
    assert JsonLines().encode(batch).splitlines() == [r.document for r in batch.records]
    packed = JsonLines(gzip=True).encode(batch)
    assert packed == JsonLines(gzip=True).encode(batch)
    assert gzip.decompress(packed) == batch.jsonl()


@pytest.mark.parametrize("deflate", [False, True])
def test_avro_round_trip_is_faithful_and_deterministic(deflate, make_batch):
    batch = make_batch(per_vehicle=3)
    body = AvroContainer(deflate=deflate).encode(batch)
    assert body == AvroContainer(deflate=deflate).encode(batch)
    assert list(read_avro_documents(io.BytesIO(body))) == documents(batch)


def test_avro_keeps_the_late_flag(make_batch):
    late = make_batch(per_vehicle=1)
    record = late.records[0]._replace(document=document_json(
        "fleet-a", "VIN0001", "bmw", "m1", {"charging": {"battery_level": []}}, late=True))
    batch = late._replace(records=[record])
    assert list(read_avro_documents(io.BytesIO(AvroContainer().encode(batch)))) == documents(batch)


def test_avro_refuses_a_document_field_the_schema_lacks(make_batch):
    batch = make_batch(per_vehicle=1)
    odd = batch._replace(records=[batch.records[0]._replace(document=b'{"surprise": 1}')])
    with pytest.raises(PermanentWriteError, match="surprise"):
        AvroContainer().encode(odd)


@pytest.mark.parametrize("options, message", [
    ({"format": "parquet"}, r"\.format: expected jsonl or avro"),
    ({"gzip": "yes"}, r"\.gzip: expected true or false"),
    ({"prefix": 3}, r"\.prefix: expected a string"),
    ({"path_template": "{application_id}/{yyyy}"}, r"\.path_template: must contain \{batch_id\}"),
    ({"path_template": "{vin}/{batch_id}"}, r"\.path_template: unknown field\(s\) vin"),
    ({"path_template": "{batch_id"}, r"\.path_template: "),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        ObjectLayout.from_options(WHERE, options)
