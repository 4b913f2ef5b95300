"""`fleetstream replay` with `state:` rebuilds the latest state (DirectRunner, real Redis).

Every vehicle is approved for one application that may see everything, so its documents
hold every data entry the mappers produced: the state must be, per property instance, the
newest of them. A second replay changes nothing, and neither does a replay of older data.
"""
from __future__ import annotations

import glob
from pathlib import Path

import orjson
import pytest
import redis
import yaml

from fleetstream.pipelines.cli import main
from fleetstream.schemas.catalogue import CAPABILITIES
from fleetstream.schemas.state import STATE_KEY_PREFIX, state_updates, value_ms
from fleetstream.simulator import fleet_vins, simulate, write_envelopes

pytest_plugins = ["fleetstream.dev.pytest_plugin"]
pytestmark = pytest.mark.servers

DB = 11
VEHICLES = 12


@pytest.fixture
def setup(redis_service, tmp_path: Path):
    url = f"redis://127.0.0.1:{redis_service.port}/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    envelopes = list(simulate(VEHICLES, duration_s=400, rate=0.2, seed=5, error_rate=0.05,
                              duplicate_rate=0.02))
    write_envelopes(tmp_path / "late.jsonl", envelopes[len(envelopes) // 2:])
    write_envelopes(tmp_path / "early.jsonl", envelopes[:len(envelopes) // 2])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "state": {"redis": url},
        "applications": [{"id": "all", "permissions": [f"{c}.*" for c in CAPABILITIES],
                          "sink": {"type": "file", "path": str(tmp_path / "unused")}}],
        "activations": [{"vin": vin, "application_id": "all", "status": "approved",
                         "at": "2020-01-01T00:00:00Z"} for vin in fleet_vins(VEHICLES, seed=5)]}))
    yield tmp_path, client
    client.flushdb()


def replay(folder: Path, pattern: str, output: str) -> None:
    assert main(["replay", "--input", str(folder / pattern), "--config",
                 str(folder / "config.yaml"), "--output", str(folder / output)]) == 0


def snapshot(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in client.scan_iter(f"{STATE_KEY_PREFIX}*")}


def test_a_replay_rebuilds_the_state_and_replaying_older_data_changes_nothing(setup) -> None:
    folder, client = setup
    replay(folder, "*.jsonl", "out")
    newest: dict[tuple[str, str], int] = {}
    for path in glob.glob(str(folder / "out" / "all" / "*.jsonl")):
        for line in open(path, "rb"):
            document = orjson.loads(line)
            for update in state_updates(document["data"]):
                key = (document["vin"], update.field)
                newest[key] = max(newest.get(key, -1), value_ms(update.value))
    assert len({vin for vin, _ in newest}) == VEHICLES
    state = snapshot(client)
    kept = {(key.decode().removeprefix(STATE_KEY_PREFIX), field.decode()): value_ms(value)
            for key, fields in state.items() for field, value in fields.items()}
    assert kept == newest
    assert client.zcard("fs:geo") == VEHICLES
    replay(folder, "early.jsonl", "again")                # older data: nothing changes
    replay(folder, "*.jsonl", "again2")                   # the same data: nothing changes
    assert snapshot(client) == state
