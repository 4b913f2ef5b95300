"""Replays (DirectRunner) of simulated routes: pseudonymous ids and geofence events end to end."""
from __future__ import annotations

import glob
import random
from pathlib import Path

import orjson
import pytest

from fleetstream.pipelines.replay import run_replay
from fleetstream.schemas.timestamps import iso_ms
from fleetstream.schemas.vehicle_ids import pseudonymous_id
from fleetstream.settings.config import parse_config
from tests.test_geofences import destination

DEPOT = (48.137, 11.575)
VIN_A, VIN_B, VIN_C = "5YJ3E7EB0KF000001", "5YJ3E7EB0KF000002", "5YJ3E7EB0KF000003"
SECRETS = {"PRIVATE_SECRET": "private-secret", "INSURER_SECRET": "insurer-secret"}
T0 = 1_772_352_000_000      # 2026-03-01T08:00:00Z
#: a circle of 310 m round the depot, and a 400 m x 400 m yard from 1,010 m to 1,410 m east
#: of it; the default hysteresis (25 m)
FENCES = [{"id": "depot", "circle": {"lat": DEPOT[0], "lon": DEPOT[1], "radius_m": 310}},
          {"id": "yard", "polygon": [
              list(destination(*destination(*DEPOT, 90, east), bearing, 200))
              for east, bearing in ((1_010, 180), (1_010, 0), (1_410, 0), (1_410, 180))]}]


def tesla_line(vin: str, at_ms: int, lat: float, lon: float, odometer: float) -> bytes:
    payload = {"vin": vin, "createdAt": iso_ms(at_ms), "isResend": False, "data": [
        {"key": "Odometer", "value": {"doubleValue": odometer}},
        {"key": "Location", "value": {"locationValue": {"latitude": lat, "longitude": lon}}}]}
    return orjson.dumps({"source": "tesla", "received_at": iso_ms(at_ms + 150),
                         "payload": orjson.dumps(payload).decode()}) + b"\n"


def drive(vin: str, start: tuple[float, float], bearing: float, steps: int, step_m: float
          ) -> list[bytes]:
    """A straight drive, one report every 10 s."""
    return [tesla_line(vin, T0 + 10_000 * i, *destination(*start, bearing, step_m * i), 1000 + i)
            for i in range(steps)]


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("routes")
    west = destination(*DEPOT, 270, 1_000)
    lines = (drive(VIN_A, west, 90, 60, 50)                                # through both
             + drive(VIN_B, destination(*DEPOT, 0, 2_000), 0, 30, 50)       # never near
             + drive(VIN_C, west, 90, 60, 50))                              # not approved
    lines += lines[5:8]                                                     # duplicates
    random.Random(4).shuffle(lines)                                         # out of order
    (folder / "routes.jsonl").write_bytes(b"".join(lines))
    return folder


def config():
    approvals = [{"vin": vin, "application_id": app, "status": "approved", "at": 1}
                 for vin in (VIN_A, VIN_B) for app in ("fleet", "private", "insurer")]
    approvals.append({"vin": VIN_C, "application_id": "fleet", "status": "pending", "at": 1})
    return parse_config({"applications": [
        {"id": "fleet", "permissions": ["vehicle_location.coordinates", "diagnostics.odometer"],
         "sink": {"type": "file", "path": "unused"}, "geofences": FENCES},
        {"id": "private", "permissions": ["vehicle_location.coordinates"],
         "sink": {"type": "file", "path": "unused"}, "geofences": FENCES,
         "vehicle_ids": "pseudonymous", "vehicle_id_secret_env": "PRIVATE_SECRET"},
        {"id": "insurer", "permissions": ["diagnostics.odometer"],
         "sink": {"type": "file", "path": "unused"},
         "vehicle_ids": "pseudonymous", "vehicle_id_secret_env": "INSURER_SECRET"}],
        "activations": approvals}, environ=SECRETS)


def replay(routes: Path, output: Path, accounting: list | None = None
           ) -> dict[str, list[dict]]:
    counted = run_replay(str(routes / "routes.jsonl"), config(), output=str(output))
    if accounting is not None:
        accounting.append(counted)
    return {app: [orjson.loads(line) for path in sorted(glob.glob(str(output / app / "*.jsonl")))
                  for line in open(path, "rb") if line.strip()]
            for app in ("fleet", "private", "insurer")}


def events_of(lines: list[dict]) -> list[tuple[str, str, str]]:
    events = [line for line in lines if line.get("type") == "geofence"]
    return [(e["vin"], e["geofence_id"], e["event"])
            for e in sorted(events, key=lambda e: (e["vin"], e["timestamp"], e["geofence_id"]))]


def test_a_replayed_route_gives_exactly_the_expected_crossings(routes: Path,
                                                               tmp_path: Path) -> None:
    accounting: list = []
    out = replay(routes, tmp_path, accounting)
    expected = [("depot", "enter"), ("depot", "exit"), ("yard", "enter"), ("yard", "exit")]
    assert events_of(out["fleet"]) == [(VIN_A, fence, event) for fence, event in expected]
    private_a = pseudonymous_id(b"private-secret", VIN_A)
    # the same crossings under the application's own id for the car; C drove the same
    # route but is approved for neither application: no event
    assert events_of(out["private"]) == [(private_a, fence, event) for fence, event in expected]
    assert events_of(out["insurer"]) == []
    [counted] = accounting
    for app, events in (("fleet", 4), ("private", 4), ("insurer", 0)):
        assert counted.get(f"app/{app}", "geofence_events") == events
        assert counted.get(f"app/{app}", "documents") == \
            counted.get(f"app/{app}", "delivered") + events == len(out[app])
    event = next(e for e in out["fleet"] if e.get("type") == "geofence")
    assert set(event) == {"version", "type", "message_id", "application_id", "vin",
                          "geofence_id", "event", "timestamp", "location"}
    assert set(event["location"]) == {"latitude", "longitude"}
    enter, leave = sorted((e for e in out["fleet"] if e.get("geofence_id") == "depot"),
                          key=lambda e: e["timestamp"])
    # 50 m every 10 s from 1,000 m west: inside at 300 m west (140 s), out past 335 m east
    assert (enter["timestamp"], leave["timestamp"]) == (iso_ms(T0 + 140_000),
                                                        iso_ms(T0 + 270_000))


def test_pseudonymous_applications_never_receive_a_vin(routes: Path, tmp_path: Path) -> None:
    run_replay(str(routes / "routes.jsonl"), config(), output=str(tmp_path))
    for app, secret in (("private", b"private-secret"), ("insurer", b"insurer-secret")):
        written = b"".join(Path(p).read_bytes() for p in glob.glob(str(tmp_path / app / "*")))
        assert written
        for vin in (VIN_A, VIN_B, VIN_C):
            assert vin.encode() not in written, (app, vin)
        assert pseudonymous_id(secret, VIN_A).encode() in written
    fleet = b"".join(Path(p).read_bytes() for p in glob.glob(str(tmp_path / "fleet" / "*")))
    assert VIN_A.encode() in fleet


def test_one_car_has_a_different_id_in_each_pseudonymous_application(routes: Path,
                                                                     tmp_path: Path) -> None:
    out = replay(routes, tmp_path)
    ids = {app: {doc["vin"] for doc in out[app]} for app in ("private", "insurer")}
    assert ids["private"] == {pseudonymous_id(b"private-secret", v) for v in (VIN_A, VIN_B)}
    assert ids["insurer"] == {pseudonymous_id(b"insurer-secret", v) for v in (VIN_A, VIN_B)}
    assert not ids["private"] & ids["insurer"]
    # message ids stay what they were: the source message and the application
    fleet_ids = {d["message_id"] for d in out["fleet"] if "data" in d}
    assert len(fleet_ids) == sum(1 for d in out["fleet"] if "data" in d)


def test_two_replays_give_identical_events(routes: Path, tmp_path: Path) -> None:
    first = replay(routes, tmp_path / "first")
    second = replay(routes, tmp_path / "second")
    for app in ("fleet", "private"):
        assert sorted(orjson.dumps(e) for e in first[app] if e.get("type") == "geofence") == \
            sorted(orjson.dumps(e) for e in second[app] if e.get("type") == "geofence")
