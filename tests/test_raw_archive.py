"""The raw archive writer: every envelope archived once in its hour folder (moto S3), a rerun
rewrites the same files with the same bytes, streaming files appear when the watermark passes
the window's end, and bad settings are named."""
from __future__ import annotations

import io
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import apache_beam as beam
import boto3
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from fleetstream.io.archive.format import read_archive
from fleetstream.io.archive.layout import HOUR_MS
from fleetstream.io.archive.raw_archive import ArchiveRawEnvelopes, ArchiveSettings, shard_of
from fleetstream.pipelines.archive import run_archive
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.schemas.errors import ConfigError
from fleetstream.simulator import START_MS
from tests.test_replay_archive import simulated

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]

WINDOW_S = 600
#: <root>/raw/<source>/yyyy/mm/dd/HH/<source>-<start>-<end>-<shard>.<ext>
FILE_NAME = re.compile(r"raw/(?P<source>\w+)/(?P<hour>\d{4}/\d\d/\d\d/\d\d)/(?P=source)-"
                       r"(?P<start>\d{8}T\d{9}Z)-(?P<end>\d{8}T\d{9}Z)-(?P<shard>\d{3})"
                       r"\.(?:jsonl\.gz|avro)$")


def stamp(epoch_ms: int) -> str:
    """The archive's compact UTC time, computed independently of archive_layout."""
    return Timestamp(micros=epoch_ms * 1000).to_utc_datetime().strftime("%Y%m%dT%H%M%S%f")[
        :-3] + "Z"


def hour_path(epoch_ms: int) -> str:
    return Timestamp(micros=epoch_ms * 1000).to_utc_datetime().strftime("%Y/%m/%d/%H")


@pytest.fixture(scope="module")
def envelopes() -> list[RawEnvelope]:
    """Three hours of simulated envelopes, one payload that is not UTF-8, one exact repeat."""
    found = simulated(hours=3, seed=11)
    return found + [RawEnvelope("bmw", START_MS + 1234, b"\xff\xfe binary"), found[7]]


@pytest.fixture(scope="module")
def input_file(envelopes: list[RawEnvelope], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The envelopes as JSON lines, in reverse order, with one line that is not an envelope."""
    path = tmp_path_factory.mktemp("archive-input") / "envelopes.jsonl"
    path.write_bytes(b"".join(e.to_json_line() + b"\n" for e in reversed(envelopes))
                     + b"not an envelope\n")
    return path


@pytest.fixture
def bucket(moto_service) -> Iterator[tuple[Any, str, list[str]]]:
    """A new moto bucket: the boto3 client, the bucket's name and the Beam S3 options."""
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_service.endpoint_url,
                      aws_access_key_id="test", aws_secret_access_key="test")
    name = f"archive-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield s3, name, ["--runner=DirectRunner", "--direct_num_workers=1",
                     f"--s3_endpoint_url={moto_service.endpoint_url}",
                     "--s3_region_name=us-east-1", "--s3_access_key_id=test",
                     "--s3_secret_access_key=test"]


def stored(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Object name below `prefix` -> bytes."""
    names = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for item in page.get("Contents", [])]
    return {name[len(prefix):]: s3.get_object(Bucket=bucket, Key=name)["Body"].read()
            for name in names}


def check_archive(files: dict[str, bytes], shards: int, window_s: int) -> list[RawEnvelope]:
    """Check each file's name against what it holds; return all envelopes read back."""
    archived: list[RawEnvelope] = []
    for name, body in files.items():
        match = FILE_NAME.fullmatch(name)
        assert match, name
        held = list(read_archive(io.BytesIO(body), name))
        assert held and all(isinstance(e, RawEnvelope) for e in held), name
        assert held == sorted(held, key=lambda e: (e.received_at_ms, e.payload)), name
        for envelope in held:
            start = envelope.received_at_ms // (window_s * 1000) * window_s * 1000
            assert (match["source"], match["hour"], match["start"], match["end"],
                    int(match["shard"])) == (
                envelope.source, hour_path(envelope.received_at_ms), stamp(start),
                stamp(start + window_s * 1000), shard_of(envelope.payload, shards)), name
        archived += held
    return archived


@pytest.mark.parametrize("archive_format", ["jsonl.gz", "avro"])
def test_every_envelope_is_archived_once_in_its_hour_and_window_file(
        archive_format: str, envelopes: list[RawEnvelope], input_file: Path, bucket) -> None:
    s3, name, options = bucket
    settings = ArchiveSettings(f"s3://{name}/fleet", archive_format, WINDOW_S, shards=3)
    summary = run_archive(str(input_file), settings, options)
    files = stored(s3, name, "fleet/")
    assert Counter(check_archive(files, 3, WINDOW_S)) == Counter(envelopes)
    expected_files = {(e.source, e.received_at_ms // HOUR_MS,
                       e.received_at_ms // (WINDOW_S * 1000), shard_of(e.payload, 3))
                      for e in envelopes}
    assert len(files) == len(expected_files) == summary.files
    assert (summary.envelopes, summary.unreadable) == (len(envelopes), 1)


def test_a_rerun_rewrites_the_same_files_with_the_same_bytes(input_file: Path, bucket) -> None:
    s3, name, options = bucket
    settings = ArchiveSettings(f"s3://{name}/fleet", "avro", WINDOW_S, shards=2)
    run_archive(str(input_file), settings, options)
    first = stored(s3, name, "fleet/")
    # a crash after some files: one missing, one left with other content
    missing, stale = sorted(first)[:2]
    s3.delete_object(Bucket=name, Key=f"fleet/{missing}")
    s3.put_object(Bucket=name, Key=f"fleet/{stale}", Body=b"an older attempt")
    summary = run_archive(str(input_file), settings, options)
    assert stored(s3, name, "fleet/") == first
    assert summary.files == len(first)
    # the bytes do not depend on the archive's root: a copy elsewhere compares equal
    run_archive(str(input_file), ArchiveSettings(f"s3://{name}/copy", "avro", WINDOW_S, 2),
                options)
    assert stored(s3, name, "copy/") == first


class _Written(beam.DoFn):
    """Records each written path with its window and pane timing (in-process runner)."""

    seen: list[tuple[str, IntervalWindow, int]] = []

    def process(self, path: str, window: Any = beam.DoFn.WindowParam,
                pane: Any = beam.DoFn.PaneInfoParam) -> Iterable[None]:
        _Written.seen.append((path, window, pane.timing))
        return []


def test_streaming_writes_one_file_per_window_when_the_watermark_passes_its_end(
        tmp_path: Path) -> None:
    hour = START_MS // 1000  # 08:00:00, seconds
    read = {  # payload -> (receive time ms, Kafka read time s)
        b"a": (START_MS + 9_000, hour + 10), b"b": (START_MS + 10_000, hour + 10),
        b"c": (START_MS + 299_000, hour + 299.5),
        # received just before 09:00, read just after: the 09:00 window, in the 08 folder
        b"d": (START_MS + HOUR_MS - 50, hour + 3600.2),
        b"e": (START_MS + HOUR_MS + 1_000, hour + 3601)}

    def event(payload: bytes, source: str = "tesla") -> beam.window.TimestampedValue:
        received_ms, read_s = read[payload]
        return beam.window.TimestampedValue(RawEnvelope(source, received_ms, payload), read_s)

    stream = (TestStream()
              .advance_watermark_to(hour)
              .add_elements([event(b"a"), event(b"b"), event(b"a", "bmw")])
              .advance_watermark_to(hour + 299.999)
              .add_elements([event(b"c")])
              .advance_watermark_to(hour + 300)
              .advance_watermark_to(hour + 3599)
              .add_elements([event(b"d"), event(b"e")])
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    _Written.seen = []
    root = str(tmp_path / "archive")
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | stream
             | ArchiveRawEnvelopes(ArchiveSettings(root, window_s=300))
             | beam.ParDo(_Written()))

    first = (hour * 1000, hour * 1000 + 300_000)
    nine = (START_MS + HOUR_MS, START_MS + HOUR_MS + 300_000)
    expected = {  # path -> (window, payloads in order)
        f"raw/tesla/2026/03/01/08/tesla-{stamp(first[0])}-{stamp(first[1])}-000.jsonl.gz":
            (first, [b"a", b"b", b"c"]),
        f"raw/bmw/2026/03/01/08/bmw-{stamp(first[0])}-{stamp(first[1])}-000.jsonl.gz":
            (first, [b"a"]),
        f"raw/tesla/2026/03/01/08/tesla-{stamp(nine[0])}-{stamp(nine[1])}-000.jsonl.gz":
            (nine, [b"d"]),
        f"raw/tesla/2026/03/01/09/tesla-{stamp(nine[0])}-{stamp(nine[1])}-000.jsonl.gz":
            (nine, [b"e"])}
    written = {path[len(root) + 1:]: ((w.start.micros // 1000, w.end.micros // 1000), timing)
               for path, w, timing in _Written.seen}
    assert len(_Written.seen) == len(written)  # one pane per file
    assert written == {name: (window, PaneInfoTiming.ON_TIME)
                       for name, (window, _) in expected.items()}
    on_disk = {str(p.relative_to(root)): p for p in Path(root).rglob("*") if p.is_file()}
    assert set(on_disk) == set(expected)  # no temporary file left behind
    for name, (_, payloads) in expected.items():
        assert [e.payload for e in read_archive(open(on_disk[name], "rb"), name)] == payloads


def test_settings_defaults_and_types() -> None:
    assert ArchiveSettings.from_options("archive", {"path": "s3://b/p"}) == ArchiveSettings(
        "s3://b/p", "jsonl.gz", 300, 1)
    assert ArchiveSettings.from_options("archive", {
        "path": "out", "format": "avro", "window_s": 3600, "shards": 999}).shards == 999
    assert shard_of(b"abc", 7) == 5  # CRC-32, the same in every process (not hash())
    with pytest.raises(ConfigError, match=r"archive settings\.format"):
        ArchiveSettings("out", format="csv")


@pytest.mark.parametrize("options, message", [
    ({"path": "out", "colour": "red"},
     "archive: unknown key(s) colour; accepted: format, path, shards, window_s"),
    ({"format": "avro"}, "archive.path: missing"),
    ({"path": " "}, "archive.path: expected the archive root"),
    ({"path": "out", "format": "parquet"},
     "archive.format: must be one of jsonl.gz, avro, got 'parquet'"),
    ({"path": "out", "window_s": 0}, "archive.window_s: expected whole seconds that divide"),
    ({"path": "out", "window_s": 420}, "got 420"),
    ({"path": "out", "window_s": "300"}, "archive.window_s"),
    ({"path": "out", "window_s": 7200}, "archive.window_s"),
    ({"path": "out", "shards": 0}, "archive.shards: expected a whole number from 1 to 999"),
    ({"path": "out", "shards": True}, "archive.shards"),
    ({"path": "out", "shards": 1000}, "archive.shards"),
    (["path"], "archive: expected a mapping with `path`"),
])
def test_bad_settings_name_the_field_and_the_fix(options: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ArchiveSettings.from_options("archive", options)
    assert message in str(raised.value)
