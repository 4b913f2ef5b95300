"""Batch replay end to end: simulator -> envelope files -> pipeline -> documents and dead letters."""
from __future__ import annotations

import glob
import gzip
import os
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from fleetstream.pipelines.cli import main
from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.timestamps import to_epoch_ms
from fleetstream.settings.config import load_config
from tests.conftest import APPS


def input_lines(folder: Path) -> int:
    with gzip.open(folder / "raw-1.jsonl.gz") as first, open(folder / "raw-2.jsonl", "rb") as second:
        return sum(1 for line in [*first, *second] if line.strip())


def read_jsonl(pattern: str) -> list[dict]:
    return [orjson.loads(line) for path in sorted(glob.glob(pattern))
            for line in open(path, "rb") if line.strip()]


def replay(archive: Path, output: Path):
    config = load_config(archive / "config.yaml")
    return config, run_replay(str(archive / "raw-*"), config, output=str(output))


def test_replay_accounts_for_every_message(archive: Path, tmp_path: Path) -> None:
    config, accounting = replay(archive, tmp_path)
    # Every line read is accounted for: mapped and delivered or filtered, dead-lettered,
    # ignored, or dropped as a duplicate; unreadable lines are dead letters too.
    assert accounting.total("read") == input_lines(archive)
    for source in accounting.sources():
        assert accounting.balanced(source), source
    documents = {app: read_jsonl(str(tmp_path / app / "*.jsonl")) for app in APPS}
    for app in APPS:
        assert len(documents[app]) == accounting.get(f"app/{app}", "delivered") > 0
        assert len(documents[app]) == accounting.get(f"app/{app}", "documents")
    dead = read_jsonl(str(tmp_path / "dead_letters" / "*.jsonl"))
    assert len(dead) == accounting.total("failed") + accounting.total("partial")
    reasons = " ".join(e["reason"] for d in dead for e in d["errors"])
    assert "envelope is not JSON" in reasons and "unknown source 'volvo'" in reasons
    assert "neither a `payload`" in reasons
    assert accounting.total("duplicate") > 0 and accounting.total("partial") > 0


def test_documents_obey_permissions_activations_and_order(archive: Path, tmp_path: Path) -> None:
    config, _ = replay(archive, tmp_path)
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    for event in config.activations:
        key = (event.vin, event.application_id)
        if key not in newest or event.at_ms >= newest[key][0]:
            newest[key] = (event.at_ms, event.status)
    for app in APPS:
        permitted = config.application(app).permitted
        per_vehicle: dict[str, list[int]] = defaultdict(list)
        for document in read_jsonl(str(tmp_path / app / "*.jsonl")):
            assert newest[(document["vin"], app)][1] == "approved"
            assert document["application_id"] == app
            for capability, properties in document["data"].items():
                assert set(properties) <= permitted[capability]
            stamps = [to_epoch_ms(e["timestamp"]) for props in document["data"].values()
                      for entries in props.values() for e in entries]
            per_vehicle[document["vin"]].append(max(stamps))
        assert per_vehicle
        for vin, stamps in per_vehicle.items():
            assert stamps == sorted(stamps), (app, vin)


def test_two_replays_deliver_identical_message_ids(archive: Path, tmp_path: Path) -> None:
    replay(archive, tmp_path / "first")
    replay(archive, tmp_path / "second")
    for app in APPS:
        first = [d["message_id"] for d in read_jsonl(str(tmp_path / "first" / app / "*.jsonl"))]
        second = [d["message_id"] for d in read_jsonl(str(tmp_path / "second" / app / "*.jsonl"))]
        assert first and sorted(first) == sorted(second)
        assert len(set(first)) == len(first)


def test_cli_replay_prints_the_summary(archive: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--input", str(archive / "raw-*"), "--config",
                 str(archive / "config.yaml"), "--output", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"read {input_lines(archive)} = delivered" in out
    assert "NO" not in out.split()
    assert os.listdir(tmp_path / "fleet")
