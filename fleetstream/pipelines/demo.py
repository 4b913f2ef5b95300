"""The embedded default (`fleetstream run`): a simulated fleet through the whole pipeline, locally.

No cluster, no cloud account: it simulates a small fleet's raw envelopes, writes
a demo configuration with three applications and their activations, runs the
pipeline on Beam's DirectRunner, and leaves everything under one folder:

    fleetstream-out/
      input/raw.jsonl.gz          the simulated envelopes
      config.yaml                 the demo configuration
      activations.jsonl           its activation events
      <application>/*.jsonl       each application's delivered documents
      dead_letters/*.jsonl        what could not be mapped
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import orjson
import yaml

from fleetstream.pipelines.accounting import Accounting
from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.config import Config
from fleetstream.settings.config import load_config
from fleetstream.simulator import activations, simulate, write_envelopes

DEMO_APPLICATIONS = (
    {"id": "fleet-manager", "permissions": ["diagnostics.*", "charging.*",
                                            "vehicle_location.*", "doors.*"]},
    {"id": "insurer", "permissions": ["diagnostics.odometer", "diagnostics.speed"]},
    {"id": "charging-app", "permissions": ["charging.*", "vehicle_location.coordinates"],
     "gzip": True},
)


def write_demo_inputs(out_dir: Path, vehicles: int, duration_s: float, rate: float,
                      seed: int) -> tuple[Path, Path]:
    """Simulated envelopes, activations and a configuration under `out_dir`; (input, config)."""
    (out_dir / "input").mkdir(parents=True, exist_ok=True)
    raw = out_dir / "input" / "raw.jsonl.gz"
    write_envelopes(raw, simulate(vehicles, duration_s=duration_s, rate=rate, seed=seed))
    app_ids = [app["id"] for app in DEMO_APPLICATIONS]
    with open(out_dir / "activations.jsonl", "wb") as lines:
        for event in activations(vehicles, app_ids, seed=seed):
            lines.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
    config = {
        "applications": [
            {"id": app["id"], "permissions": app["permissions"],
             "sink": {"type": "file", "path": str(out_dir / app["id"]),
                      "gzip": app.get("gzip", False)}}
            for app in DEMO_APPLICATIONS],
        "activations": "activations.jsonl",
    }
    config_path = out_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return raw, config_path


def run_demo(out_dir: str | os.PathLike[str] = "fleetstream-out", vehicles: int = 40,
             duration_s: float = 600.0, rate: float = 0.2, seed: int = 1,
             beam_args: Sequence[str] = ()) -> tuple[Config, Accounting]:
    """Simulate, configure and run; returns the configuration and the job's accounting."""
    out = Path(out_dir).resolve()
    raw, config_path = write_demo_inputs(out, vehicles, duration_s, rate, seed)
    config = load_config(config_path)
    accounting = run_replay(str(raw), config, dead_letters=str(out / "dead_letters"),
                            beam_args=beam_args)
    return config, accounting
