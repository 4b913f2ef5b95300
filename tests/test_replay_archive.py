"""Replay from the raw archive: only the needed folders are listed and opened; damaged files,
bad lines and empty ranges are reported and the replay goes on."""
from __future__ import annotations

import gzip
import re
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import boto3
import orjson
import pytest
import yaml
from apache_beam.io.aws.s3filesystem import S3FileSystem
from apache_beam.io.filesystems import FileSystems

from fleetstream.io.archive.format import encode_archive, read_archive
from fleetstream.io.archive.layout import HOUR_MS, archive_file, archive_patterns, hour_folder
from fleetstream.io.files.envelope_files import EnvelopeFile, file_parts
from fleetstream.io.files.s3_objects import S3Objects
from fleetstream.pipelines.cli import main
from fleetstream.schemas.envelope import RawEnvelope
from fleetstream.simulator import START_MS, activations, simulate
from fleetstream.transforms.filter_envelopes import parse_time
from tests.test_replay import read_jsonl

pytest_plugins = ["fleetstream.dev.sink_pytest_plugin"]

VEHICLES = 8
WINDOW = (START_MS, START_MS + 300_000)


def simulated(hours: int, seed: int = 5) -> list[RawEnvelope]:
    return [RawEnvelope(e["source"], parse_time(e["received_at"], "received_at"),
                        e["payload"].encode())
            for e in simulate(VEHICLES, duration_s=hours * 3600, rate=0.02, seed=seed,
                              error_rate=0.0, duplicate_rate=0.0)]


def archive_files(envelopes: list[RawEnvelope], archive_format: str = "jsonl.gz"
                  ) -> dict[str, bytes]:
    """Archive object name -> bytes, one file per source and hour."""
    groups: dict[tuple[str, int], list[RawEnvelope]] = defaultdict(list)
    for envelope in envelopes:
        groups[envelope.source, envelope.received_at_ms // HOUR_MS].append(envelope)
    return {archive_file("", source, hour * HOUR_MS, (hour * HOUR_MS, (hour + 1) * HOUR_MS), 0,
                         archive_format).lstrip("/"): encode_archive(group, archive_format, "x")
            for (source, hour), group in groups.items()}


def write_config(folder: Path) -> Path:
    with open(folder / "activations.jsonl", "wb") as out:
        for event in activations(VEHICLES, ["fleet"], seed=5):
            out.write(orjson.dumps(event) + b"\n")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "applications": [{"id": "fleet", "permissions": ["diagnostics.*"],
                          "sink": {"type": "file", "path": "unused"}}],
        "activations": "activations.jsonl"}))
    return path


def test_patterns_cover_the_range_with_whole_days_and_months_coalesced() -> None:
    one_hour = archive_patterns("s3://b/a/", ["bmw"], START_MS + 60_000, START_MS + HOUR_MS, 0)
    assert one_hour == ["s3://b/a/raw/bmw/2026/03/01/08/**"]
    span = archive_patterns("s3://b/a", ["bmw"], parse_time("2026-02-27T23:30:00Z", "f"),
                            parse_time("2026-05-02T01:00:00Z", "u"), 0)
    assert span == ["s3://b/a/raw/bmw/2026/02/27/23/**", "s3://b/a/raw/bmw/2026/02/28/**",
                    "s3://b/a/raw/bmw/2026/03/**", "s3://b/a/raw/bmw/2026/04/**",
                    "s3://b/a/raw/bmw/2026/05/01/**", "s3://b/a/raw/bmw/2026/05/02/00/**"]
    assert archive_patterns("r", ["bmw", "audi"], None, None, 0) == ["r/raw/audi/**",
                                                                    "r/raw/bmw/**"]
    assert archive_patterns("r", ["bmw"], START_MS, None, START_MS + 1) == [
        "r/raw/bmw/2026/03/01/08/**"]
    assert hour_folder("r/", "bmw", START_MS + HOUR_MS - 1) == "r/raw/bmw/2026/03/01/08"


@pytest.fixture
def s3_archive(moto_service) -> Iterator[tuple[str, list[RawEnvelope], list[str]]]:
    """A three-hour archive in a moto bucket whose first and last hours also hold a corrupt
    file; yields its root, its envelopes and the S3 options of the CLI."""
    envelopes = simulated(hours=3)
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_service.endpoint_url,
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=bucket)
    # three kinds of file: gzip JSON lines, Avro (smartcar) and plain JSON lines (mercedes)
    files = {**archive_files([e for e in envelopes if e.source != "smartcar"]),
             **archive_files([e for e in envelopes if e.source == "smartcar"], "avro")}
    for name, body in files.items():
        if "/mercedes/" in name:
            name, body = name.removesuffix(".gz"), gzip.decompress(body)
        s3.put_object(Bucket=bucket, Key=f"fleet/{name}", Body=body)
    for hour in (0, 2):
        folder = hour_folder("fleet", "bmw", START_MS + hour * HOUR_MS)
        s3.put_object(Bucket=bucket, Key=f"{folder}/corrupt.jsonl.gz", Body=b"not gzip at all")
    yield f"s3://{bucket}/fleet", envelopes, [
        "--s3-endpoint-url", moto_service.endpoint_url, "--s3-region", "us-east-1",
        "--s3-access-key-id", "test", "--s3-secret-access-key", "test"]


def test_one_hour_replay_lists_and_opens_only_that_hour(
        s3_archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    root, envelopes, s3_options = s3_archive
    listed: list[str] = []
    opened: list[str] = []
    real_list, real_open, real_get = S3FileSystem._list, FileSystems.open, S3Objects.open
    monkeypatch.setattr(S3FileSystem, "_list", lambda fs, prefix: (
        listed.append(prefix), real_list(fs, prefix))[1])
    monkeypatch.setattr(FileSystems, "open", staticmethod(lambda path, *a, **k: (
        opened.append(path), real_open(path, *a, **k))[1]))
    monkeypatch.setattr(S3Objects, "open", lambda objects, path: (
        opened.append(path), real_get(objects, path))[1])
    start, end = START_MS + HOUR_MS, START_MS + 2 * HOUR_MS
    code = main(["replay", "--archive", root, "--from", str(start), "--until", str(end),
                 "--config", str(write_config(tmp_path)), "--output", str(tmp_path / "out"),
                 "--direct-num-workers", "1", *s3_options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    hour = "2026/03/01/09"
    assert listed and all(f"/{hour}" in prefix for prefix in listed), listed
    assert opened and all(f"/{hour}/" in path for path in opened), opened
    expected = sum(start <= e.received_at_ms < end for e in envelopes)
    assert f"read {expected} = delivered" in captured.out
    assert "broke off" not in captured.out
    assert f"files read: {len(opened)}" in captured.out
    assert "this worker has read" in captured.err


def test_whole_archive_replay_reports_the_corrupt_files_and_reads_the_rest(
        s3_archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, envelopes, s3_options = s3_archive
    code = main(["replay", "--archive", root, "--config", str(write_config(tmp_path)),
                 "--output", str(tmp_path / "out"), *s3_options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"read {len(envelopes)} = delivered" in captured.out
    assert "2 file(s) broke off" in captured.out
    broken = [d for d in read_jsonl(str(tmp_path / "out" / "dead_letters" / "*"))
              if d["errors"][0]["field"] == "file"]
    assert sorted(d["payload"] for d in broken) == [
        f"{hour_folder(root, 'bmw', START_MS + hour * HOUR_MS)}/corrupt.jsonl.gz"
        for hour in (0, 2)]
    assert all("after 0 envelopes" in d["errors"][0]["reason"] for d in broken)


def test_empty_range_says_so_and_succeeds(s3_archive, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root, _, s3_options = s3_archive
    code = main(["replay", "--archive", root, "--from", "2027-01-01T00:00:00Z",
                 "--until", "2027-01-01T05:00:00Z", "--config", str(write_config(tmp_path)),
                 "--output", str(tmp_path / "out"), *s3_options])
    assert code == 0
    assert "holds no files for the selected sources and times" in capsys.readouterr().err


def test_damaged_files_and_bad_lines_become_dead_letters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    envelopes = simulated(hours=1, seed=6)[:120]
    first, second, third, fourth = (envelopes[i::4] for i in range(4))
    files = tmp_path / "in"
    files.mkdir()
    whole = encode_archive(first, "jsonl.gz", "a")
    (files / "good.jsonl.gz").write_bytes(whole)
    # a gzip stream cut off in the middle: the lines before the cut still count
    cut = encode_archive(second, "jsonl.gz", "b")
    (files / "cut.jsonl.gz").write_bytes(cut[:len(cut) // 2])
    avro = encode_archive(third, "avro", "c")
    (files / "cut.avro").write_bytes(avro[:len(avro) - 40])
    lines = b"".join(e.to_json_line() + b"\n" for e in fourth)
    unknown = RawEnvelope("volvo", START_MS, b"{}").to_json_line()
    (files / "lines.jsonl").write_bytes(lines + unknown + b"\n" + fourth[0].to_json_line()[:30])
    code = main(["replay", "--input", str(files / "*"), "--config", str(write_config(tmp_path)),
                 "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    dead = read_jsonl(str(tmp_path / "out" / "dead_letters" / "*"))
    broken = {d["payload"].rsplit("/", 1)[-1]: d["errors"][0]["reason"] for d in dead
              if d["errors"][0]["field"] == "file"}
    assert set(broken) == {"cut.jsonl.gz", "cut.avro"}
    assert "2 file(s) broke off" in captured.out
    truncated = [d for d in dead if d["errors"][0]["field"] == "envelope"]
    assert [d["payload"] for d in truncated] == [fourth[0].to_json_line()[:30].decode()]
    assert any(d["source"] == "volvo" for d in dead)
    read = int(re.search(r"^read (\d+) = ", captured.out, re.MULTILINE).group(1))
    # every envelope of the whole files, some of the cut ones, and the unknown source
    assert len(first) + len(fourth) + 1 < read < len(envelopes) + 1
    with gzip.open(files / "cut.jsonl.gz") as partial:
        with pytest.raises(EOFError):
            partial.read()


@pytest.mark.parametrize("part_bytes", [1, 37, 100, 1000, 10**6])
def test_parts_of_a_plain_file_read_every_line_once(tmp_path: Path, part_bytes: int) -> None:
    envelopes = simulated(hours=1, seed=7)[:60]
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(e.to_json_line() + b"\n" for e in envelopes) + b"\n")
    size = path.stat().st_size
    parts = file_parts([EnvelopeFile(str(path), size)], part_bytes)
    assert len(parts) == (1 if size <= part_bytes else -(-size // part_bytes))
    read = []
    for name, start, end in parts:
        with open(name, "rb") as stream:
            read += list(read_archive(stream, name, start, end))
    assert read == envelopes


def test_archived_then_replayed_delivers_the_ids_of_the_original_files(
        archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(archive / "config.yaml")
    root = tmp_path / "archive"
    assert main(["archive", "--input", str(archive / "raw-1.jsonl.gz"), "--to", str(root),
                 "--format", "avro", "--window", "60"]) == 0
    archived_line = capsys.readouterr().out
    assert main(["replay", "--input", str(archive / "raw-1.jsonl.gz"), "--config", config,
                 "--output", str(tmp_path / "direct")]) == 0
    direct = capsys.readouterr().out
    assert main(["replay", "--archive", str(root), "--config", config,
                 "--output", str(tmp_path / "replayed")]) == 0
    replayed = capsys.readouterr().out
    read = re.search(r"^read (\d+) = ", direct, re.MULTILINE).group(1)
    assert f"archived {read} envelopes" in archived_line
    assert re.search(r"^read (\d+) = ", replayed, re.MULTILINE).group(1) == read
    for app in ("fleet", "insurer"):
        ids = [{d["message_id"] for d in read_jsonl(str(tmp_path / out / app / "*.jsonl"))}
               for out in ("direct", "replayed")]
        assert ids[0] and ids[0] == ids[1]
