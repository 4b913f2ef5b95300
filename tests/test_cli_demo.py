"""The embedded demo (`fleetstream run`) and `fleetstream simulate` from the command line."""
from __future__ import annotations

import glob
import gzip
from pathlib import Path

import orjson
import pytest

from fleetstream.pipelines.cli import main
from fleetstream.schemas.envelope import parse_envelope_line


def test_run_demo_delivers_and_accounts_for_everything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["run", "--out", str(out), "--vehicles", "8", "--duration", "120"]) == 0
    summary = capsys.readouterr().out
    assert "NO" not in summary.split() and "total" in summary
    for app in ("fleet-manager", "insurer"):
        documents = [orjson.loads(line) for path in glob.glob(str(out / app / "*.jsonl"))
                     for line in open(path, "rb")]
        assert documents and all(d["application_id"] == app for d in documents)
    charging = glob.glob(str(out / "charging-app" / "*.jsonl.gz"))
    assert charging and gzip.open(charging[0]).readline().startswith(b'{"version":1')
    assert (out / "config.yaml").exists() and (out / "input" / "raw.jsonl.gz").exists()


def test_simulate_writes_envelopes_and_activations(tmp_path: Path) -> None:
    raw, act = tmp_path / "raw.jsonl", tmp_path / "act.jsonl"
    assert main(["simulate", "--vehicles", "4", "--messages", "50", "--to", str(raw),
                 "--activations", str(act), "--applications", "a,b"]) == 0
    envelopes = [parse_envelope_line(line) for line in open(raw, "rb")]
    assert len(envelopes) == 50
    assert {e.source for e in envelopes} == {"tesla", "bmw", "mercedes", "smartcar"}
    events = [orjson.loads(line) for line in open(act, "rb")]
    assert {e["application_id"] for e in events} == {"a", "b"}


def test_simulate_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--rate", "0", "--to", str(tmp_path / "x.jsonl")]) == 2
    assert "rate must be positive" in capsys.readouterr().err


def test_a_first_run_prints_progress_and_a_summary_without_library_noise(tmp_path: Path) -> None:
    """Google's FutureWarnings and Beam's relayed worker warnings are not the user's business
    (runtime/library_noise.py); they printed 25 of a first run's 44 lines."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "fleetstream.pipelines.cli", "run", "--out",
                          str(tmp_path / "demo"), "--vehicles", "4", "--duration", "60"],
                         capture_output=True, text=True, timeout=300, check=True)
    output = run.stdout + run.stderr
    assert "Warning" not in output and "WARNING" not in output, output
    assert "replay: this worker has read" in output and "deliveries and dead letters" in output
    assert len(output.splitlines()) < 25, output
