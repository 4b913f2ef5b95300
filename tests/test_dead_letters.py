"""Dead letters: list them, and resend map-stage ones after a mapper fix."""
from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from fleetstream import mappers
from fleetstream.io.kafka.admin import Topic, create_topics
from fleetstream.mappers.base import OK, MapPayload, MapResult
from fleetstream.pipelines.cli import main
from fleetstream.pipelines.dead_letters import (DeadLetterFilter, DeadLetterSummary, is_resendable,
                                                read_dead_letters, resend_dead_letters)
from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.dead_letter import MAP_STAGE, dead_letter, delivery_dead_letter
from fleetstream.schemas.document import message_id
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.settings.config import load_config
from fleetstream.simulator import simulate, write_envelopes
from fleetstream.transforms.filter_envelopes import EnvelopeFilter
from tests.test_replay import read_jsonl

pytest_plugins = ["fleetstream.dev.pytest_plugin"]

FIXED_VIN = "5YJSA1E24RN000001"
APP = "fleet"


class FixedTesla:
    """The tesla mapper after a "fix": the chosen payloads it used to fail on now map."""

    def __init__(self, original: MapPayload, fixed: frozenset[bytes]) -> None:
        self._original = original
        self._fixed = fixed

    def __call__(self, payload: bytes, received_at_ms: int) -> MapResult:
        if payload not in self._fixed:
            return self._original(payload, received_at_ms)
        odometer = [{"data": {"value": 1234.5, "unit": "kilometers"},
                     "timestamp": iso_ms(received_at_ms)}]
        return MapResult(FIXED_VIN, OK, {"diagnostics": {"odometer": odometer}}, [],
                         received_at_ms)


@pytest.fixture(scope="module")
def dead_letters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A replay's output over simulated envelopes with plenty of trouble, and its config."""
    folder = tmp_path_factory.mktemp("dead")
    write_envelopes(folder / "raw.jsonl", simulate(8, duration_s=300, rate=0.2, seed=5,
                                                   error_rate=0.15))
    with open(folder / "raw.jsonl", "ab") as extra:
        extra.write(b"not an envelope\n")
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "applications": [{"id": APP, "permissions": ["diagnostics.*"],
                          "sink": {"type": "file", "path": str(folder / "unused")}}],
        "activations": [{"vin": FIXED_VIN, "application_id": APP, "status": "approved",
                         "at": "2020-01-01T00:00:00Z"}]}))
    run_replay(str(folder / "raw.jsonl"), load_config(folder / "config.yaml"),
               output=str(folder / "first"))
    return folder


def pattern(folder: Path) -> str:
    return str(folder / "first" / "dead_letters" / "*.jsonl")


def test_list_counts_per_source_stage_and_outcome(
        dead_letters: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = list(read_dead_letters(pattern(dead_letters)))
    summary = DeadLetterSummary.of(records)
    assert summary.total == len(records) > 10
    assert summary.by_stage["ingest"] == 1 and summary.by_stage["map"] == len(records) - 1
    assert summary.resendable == len(records) - 1
    assert set(summary.by_outcome) == {"failed", "partial"}
    assert sum(summary.by_source.values()) == len(records)
    assert main(["dead-letters", "list", "--input", pattern(dead_letters),
                 "--source", "tesla"]) == 0
    out = capsys.readouterr().out
    tesla = sum(r["source"] == "tesla" for r in records)
    assert out.startswith(f"{tesla} dead letters, {tesla} of them map-stage")
    assert "most common reasons" in out and "bmw" not in out


def test_filters_select_by_reason_and_receive_time(dead_letters: Path) -> None:
    records = list(read_dead_letters(pattern(dead_letters)))
    reason = records[0]["errors"][0]["reason"]
    by_reason = DeadLetterFilter(reason=reason.upper())
    assert 0 < sum(map(by_reason.keeps, records)) < len(records)
    stamps = sorted(r["received_at"] for r in records if r["received_at"])
    middle = DeadLetterFilter(EnvelopeFilter(
        from_ms=to_epoch_ms(stamps[0]) + 1, until_ms=to_epoch_ms(stamps[-1])))
    kept = [r for r in records if middle.keeps(r)]
    assert kept and all(stamps[0] < r["received_at"] < stamps[-1] for r in kept)


def test_delivery_and_ingest_dead_letters_are_not_resendable() -> None:
    assert not is_resendable(delivery_dead_letter(APP, "b1", "sink down", [b'{"vin": "x"}']))
    assert not is_resendable({"source": None, "stage": "ingest", "payload": "junk"})
    assert is_resendable({"source": "bmw", "stage": "map", "payload_b64": "AA=="})


def test_resend_delivers_fixed_messages_and_dead_letters_the_rest(
        dead_letters: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tesla = [r for r in read_dead_letters(pattern(dead_letters))
             if r["source"] == "tesla" and r["outcome"] == "failed"]
    assert len({r["message_id"] for r in tesla}) >= 2
    fixed = {r["message_id"]: r["payload"].encode() for r in tesla[:1]}
    monkeypatch.setitem(mappers.MAPPERS, "tesla",
                        FixedTesla(mappers.MAPPERS["tesla"], frozenset(fixed.values())))
    config = load_config(dead_letters / "config.yaml")

    resent = resend_dead_letters(pattern(dead_letters), config, str(tmp_path / "resent"),
                                 selection=DeadLetterFilter(EnvelopeFilter(
                                     sources=frozenset({"tesla"}))))
    tesla_map = [r for r in read_dead_letters(pattern(dead_letters)) if r["source"] == "tesla"]
    assert resent.resent == len(tesla_map) and resent.not_resendable == 0
    documents = read_jsonl(str(tmp_path / "resent" / APP / "*.jsonl"))
    assert {d["message_id"] for d in documents} == {message_id(m, APP) for m in fixed}
    assert {d["vin"] for d in documents} == {FIXED_VIN}
    again = read_jsonl(str(tmp_path / "resent" / "dead_letters" / "*.jsonl"))
    assert {r["message_id"] for r in again} == {r["message_id"] for r in tesla_map} - set(fixed)

    # a first-time replay with the fixed mapper delivers the very same ids
    run_replay(str(dead_letters / "raw.jsonl"), config, output=str(tmp_path / "first-time"))
    first = read_jsonl(str(tmp_path / "first-time" / APP / "*.jsonl"))
    assert {d["message_id"] for d in first if d["vin"] == FIXED_VIN} == {
        d["message_id"] for d in documents}


def test_cli_resend_prints_what_it_did(dead_letters: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dead-letters", "resend", "--input", pattern(dead_letters), "--config",
                 str(dead_letters / "config.yaml"), "--output", str(tmp_path),
                 "--reason", "no-such-reason-anywhere", "--direct-num-workers", "1"])
    assert code == 0
    assert "resent 0 map-stage dead letters" in capsys.readouterr().out
    code = main(["dead-letters", "resend", "--input", pattern(dead_letters), "--config",
                 str(dead_letters / "config.yaml"), "--output", str(tmp_path),
                 "--direct-num-workers", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "1 selected dead letters are not map-stage" in out
    assert "balanced" in out
    assert main(["dead-letters", "list", "--input", str(tmp_path / "none-*.jsonl")]) == 2
    assert {r["stage"] for r in read_jsonl(str(tmp_path / "dead_letters" / "*.jsonl"))} == {"map"}


def test_dead_letters_are_listed_from_a_kafka_topic(
        kafka_service, capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"dead-letters-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_service.bootstrap, [Topic(topic, 2)])
    records = [dead_letter("bmw", 1_772_352_000_000 + i, "failed", MAP_STAGE,
                           [{"field": "odometer", "reason": f"reason {i % 3}"}], b"{}", None)
               for i in range(30)]
    producer = Producer({"bootstrap.servers": kafka_service.bootstrap})
    for i, record in enumerate(records):
        producer.produce(topic, key=str(i % 5).encode(), value=orjson.dumps(record))
    producer.flush(30)
    url = f"kafka://{kafka_service.bootstrap}/{topic}"
    assert sorted(read_dead_letters(url), key=lambda r: r["received_at"]) == records
    assert main(["dead-letters", "list", "--input", url, "--reason", "reason 1"]) == 0
    assert capsys.readouterr().out.startswith("10 dead letters, 10 of them map-stage")
    assert main(["dead-letters", "list", "--input", f"kafka://{kafka_service.bootstrap}/none-"
                 f"{uuid.uuid4().hex[:6]}"]) == 2
    assert "does not exist" in capsys.readouterr().err
