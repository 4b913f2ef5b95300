"""Replay filters: --source, --vin, --from/--until and --application select what is replayed."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from fleetstream.mappers import MAPPERS
from fleetstream.pipelines.cli import main
from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.envelope import RawEnvelope, parse_envelope_line
from fleetstream.settings.config import load_config
from fleetstream.transforms.filter_envelopes import EnvelopeFilter, parse_time
from tests.conftest import APPS
from tests.test_replay import read_jsonl

T0 = parse_time("2026-03-01T08:00:00Z", "--from")


def envelopes(folder: Path) -> list[RawEnvelope]:
    """The readable envelopes of the simulated archive file."""
    with gzip.open(folder / "raw-1.jsonl.gz") as lines:
        return [parse_envelope_line(line) for line in lines if line.strip()]


def message_ids(output: Path, app: str) -> set[str]:
    return {d["message_id"] for d in read_jsonl(str(output / app / "*.jsonl"))}


@pytest.fixture(scope="module")
def full_replay(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output of an unfiltered replay, to compare filtered ones with."""
    output = tmp_path_factory.mktemp("full")
    run_replay(str(archive / "raw-*"), load_config(archive / "config.yaml"), output=str(output))
    return output


def filtered_replay(archive: Path, output: Path, **options):
    return run_replay(str(archive / "raw-*"), load_config(archive / "config.yaml"),
                      output=str(output), **options)


def test_predicate_selects_source_and_half_open_time_window() -> None:
    selection = EnvelopeFilter(sources=frozenset({"bmw"}), from_ms=T0, until_ms=T0 + 1000)
    assert selection.keeps(RawEnvelope("bmw", T0, b"{}"))
    assert selection.keeps(RawEnvelope("bmw", T0 + 999, b"{}"))
    assert not selection.keeps(RawEnvelope("bmw", T0 + 1000, b"{}"))
    assert not selection.keeps(RawEnvelope("bmw", T0 - 1, b"{}"))
    assert not selection.keeps(RawEnvelope("tesla", T0, b"{}"))
    assert EnvelopeFilter().keeps_everything() and not selection.keeps_everything()
    assert not selection.keeps_receipt("bmw", None)


def test_predicate_selects_by_the_mapped_vin(archive: Path) -> None:
    sample = envelopes(archive)
    vin = next(v for e in sample if (v := MAPPERS[e.source](e.payload, e.received_at_ms).vin))
    selection = EnvelopeFilter(vins=frozenset({vin}))
    kept = [e for e in sample if selection.keeps(e)]
    assert kept and len(kept) < len(sample)
    assert all(MAPPERS[e.source](e.payload, e.received_at_ms).vin == vin for e in kept)
    assert not selection.keeps(RawEnvelope("volvo", T0, b"{}"))


def test_time_parsing_and_bad_options() -> None:
    assert parse_time("2026-03-01T08:00:00Z", "--from") == parse_time(str(T0), "--from") == T0
    with pytest.raises(ValueError, match="--until: expected an ISO-8601 time"):
        parse_time("yesterday", "--until")
    with pytest.raises(ValueError, match="--from must be earlier than --until"):
        EnvelopeFilter(from_ms=T0, until_ms=T0)


def test_source_filter_skips_other_sources_and_keeps_ids(
        archive: Path, full_replay: Path, tmp_path: Path) -> None:
    accounting = filtered_replay(archive, tmp_path, selection=EnvelopeFilter(
        sources=frozenset({"bmw"})))
    sample = envelopes(archive)
    bmw = sum(e.source == "bmw" for e in sample)
    assert accounting.get("bmw", "read") == bmw
    assert accounting.sources() == ["bmw", "unreadable"]
    # the other simulated envelopes and raw-2's volvo envelope are skipped; raw-2's
    # unreadable lines are dead letters before any filter
    assert accounting.skipped() == len(sample) - bmw + 1
    assert accounting.balanced("bmw")
    for app in APPS:
        kept = message_ids(tmp_path, app)
        assert kept and kept <= message_ids(full_replay, app)
        assert {d["vin"] for d in read_jsonl(str(tmp_path / app / "*.jsonl"))} <= {
            d["vin"] for d in read_jsonl(str(full_replay / app / "*.jsonl"))
            if d["message_id"] in kept}


def test_time_window_replays_only_envelopes_received_inside_it(
        archive: Path, full_replay: Path, tmp_path: Path) -> None:
    stamps = sorted(e.received_at_ms for e in envelopes(archive))
    start, end = stamps[len(stamps) // 4], stamps[len(stamps) // 2]
    accounting = filtered_replay(archive, tmp_path, selection=EnvelopeFilter(
        from_ms=start, until_ms=end))
    inside = sum(start <= stamp < end for stamp in stamps)
    assert accounting.total("read") - accounting.get("unreadable", "read") == inside
    for app in APPS:
        assert message_ids(tmp_path, app) <= message_ids(full_replay, app)


def test_vin_filter_delivers_only_those_vehicles(
        archive: Path, full_replay: Path, tmp_path: Path) -> None:
    delivered = read_jsonl(str(full_replay / "fleet" / "*.jsonl"))
    vins = sorted({d["vin"] for d in delivered})[:2]
    (tmp_path / "vins.txt").write_text(f"{vins[1]}\n\n")
    code = main(["replay", "--input", str(archive / "raw-*"), "--config",
                 str(archive / "config.yaml"), "--output", str(tmp_path / "out"),
                 "--vin", vins[0], "--vin-file", str(tmp_path / "vins.txt"),
                 "--direct-num-workers", "1"])
    assert code == 0
    documents = read_jsonl(str(tmp_path / "out" / "fleet" / "*.jsonl"))
    assert {d["vin"] for d in documents} == set(vins)
    assert {d["message_id"] for d in documents} == {
        d["message_id"] for d in delivered if d["vin"] in vins}


def test_application_filter_delivers_to_those_applications_only(
        archive: Path, full_replay: Path, tmp_path: Path) -> None:
    accounting = filtered_replay(archive, tmp_path, only=["insurer"])
    assert not (tmp_path / "fleet").exists()
    assert message_ids(tmp_path, "insurer") == message_ids(full_replay, "insurer")
    assert accounting.skipped() == 0


def test_cli_summary_shows_skipped_and_refuses_bad_options(
        archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["replay", "--input", str(archive / "raw-*"), "--config",
            str(archive / "config.yaml"), "--output", str(tmp_path), "--direct-num-workers", "1"]
    assert main(base + ["--source", "tesla", "--source", "smartcar",
                        "--application", "fleet"]) == 0
    out = capsys.readouterr().out
    assert "envelopes outside the replay filters" in out and "skipped" in out
    assert "insurer" not in out
    assert main(base + ["--application", "nobody"]) == 2
    assert "unknown application(s) nobody" in capsys.readouterr().err
    assert main(base + ["--from", "soon"]) == 2
    assert main(base + ["--vin-file", str(tmp_path / "missing.txt")]) == 2
    assert "--vin-file" in capsys.readouterr().err


def test_unfiltered_summary_has_no_skipped_line(
        archive: Path, tmp_path: Path) -> None:
    accounting = filtered_replay(archive, tmp_path)
    assert accounting.skipped() == 0
    assert "skipped" not in accounting.render(APPS)
