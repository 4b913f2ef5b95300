"""`fleetstream api` without servers: Approvals fed directly, state in fakeredis.

What each key may see, 401/404 wording, pseudonymous ids, ETag/304, bad input (never a
500), the geofence events and the start-up errors. The same API over real Redis and a real
activations topic: tests/test_api_servers.py.
"""
from __future__ import annotations

from pathlib import Path

import fakeredis
import orjson
import pytest
from starlette.testclient import TestClient

from fleetstream.api.activations import Approvals
from fleetstream.api.app import StateApi, create_app
from fleetstream.api.keys import ApiKeys
from fleetstream.api.server import ApiService, parse_listen
from fleetstream.schemas.activations import ActivationEvent
from fleetstream.schemas.errors import ConfigError
from fleetstream.schemas.state import geofence_events_key, state_key, state_updates
from fleetstream.settings.config import parse_config

VIN, OTHER = "5YJ3E7EB0KF000001", "WBA00000000000002"
KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"
SECRET = "s" * 32


def config(state: bool = True, pseudonymous_b: bool = False):
    raw = {"applications": [
        {"id": "fleet-a", "permissions": ["diagnostics.*", "vehicle_location.coordinates"],
         "sink": {"type": "file", "path": "/tmp/unused"}, "api_keys_env": "FLEET_A_API_KEYS",
         "geofences": [{"id": "depot", "circle": {"lat": 48.1, "lon": 11.5, "radius_m": 200}}]},
        {"id": "insurer-b", "permissions": ["diagnostics.odometer"],
         "sink": {"type": "file", "path": "/tmp/unused"}, "api_keys_env": "INSURER_B_API_KEYS",
         **({"vehicle_ids": "pseudonymous", "vehicle_id_secret_env": "B_SECRET"}
            if pseudonymous_b else {})}]}
    if state:
        raw["state"] = {"redis": "redis://127.0.0.1:6379/0"}
    return parse_config(raw, Path("/tmp"), environ={"B_SECRET": SECRET})


def entry(value, at: str) -> dict:
    return {"data": value, "timestamp": at}


DATA = {"diagnostics": {
    "odometer": [entry({"value": 100.0, "unit": "kilometers"}, "2026-03-01T08:00:00.000Z")],
    "speed": [{"failure": {"reason": "unavailable"}, "timestamp": "2026-03-01T08:00:01.000Z"}],
    "tire_pressures": [
        entry({"location": "front_left", "pressure": {"value": 2.3, "unit": "bars"}},
              "2026-03-01T08:00:00.000Z"),
        entry({"location": "rear_right", "pressure": {"value": 2.1, "unit": "bars"}},
              "2026-03-01T08:00:02.000Z")]},
    "vehicle_location": {"coordinates": [entry({"latitude": 48.137, "longitude": 11.575},
                                               "2026-03-01T08:00:03.000Z")]}}


def fake_state(client: fakeredis.FakeRedis, vin: str, data: dict) -> None:
    """What StateWriter keeps for one message into an empty store (no Lua in fakeredis)."""
    for update in state_updates(data):
        client.hset(state_key(vin), update.field, update.value)
        if update.geo:
            lon, lat = map(float, update.geo.split(","))
            client.geoadd("fs:geo", (lon, lat, vin))


@pytest.fixture
def served():
    """(client, approvals, redis, config) for fleet-a (VINs) and insurer-b (pseudonyms)."""
    cfg = config(pseudonymous_b=True)
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)
    fake_state(sync, VIN, DATA)
    fake_state(sync, OTHER, DATA)
    approvals = Approvals(cfg.applications)
    for app in ("fleet-a", "insurer-b"):
        approvals.offer(ActivationEvent(VIN, app, "approved", 1))
    keys = ApiKeys({"fleet-a": [KEY_A], "insurer-b": [KEY_B]})
    api = StateApi(cfg.applications, approvals, keys, fakeredis.FakeAsyncRedis(server=server))
    with TestClient(create_app(api), raise_server_exceptions=False) as client:
        yield client, approvals, sync, cfg


def get(client, path: str, key: str | None = KEY_A, **headers):
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return client.get(path, headers=headers)


def test_the_state_holds_the_newest_data_entries_of_the_permitted_properties(served) -> None:
    client, *_ = served
    answer = get(client, f"/v1/vehicles/{VIN}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["vin"] == VIN and body["updated_at"] == "2026-03-01T08:00:03.000Z"
    assert set(body["data"]) == {"diagnostics", "vehicle_location"}
    assert "speed" not in body["data"]["diagnostics"]          # failures are not state
    assert [e["data"]["location"] for e in body["data"]["diagnostics"]["tire_pressures"]] == [
        "front_left", "rear_right"]
    tires = get(client, f"/v1/vehicles/{VIN}/diagnostics/tire_pressures").json()
    assert len(tires["entries"]) == 2 and tires["property"] == "tire_pressures"


def test_an_application_sees_only_its_permitted_properties(served) -> None:
    client, approvals, _, cfg = served
    b_id = cfg.application("insurer-b").vehicle_id(VIN)
    body = get(client, f"/v1/vehicles/{b_id}", KEY_B).json()
    assert body["data"] == {"diagnostics": {"odometer": [entry(
        {"value": 100.0, "unit": "kilometers"}, "2026-03-01T08:00:00.000Z")]}}
    hidden = get(client, f"/v1/vehicles/{b_id}/vehicle_location/coordinates", KEY_B)
    missing = get(client, f"/v1/vehicles/{b_id}/vehicle_location/altitude", KEY_B)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content


def test_a_vehicle_not_approved_answers_exactly_like_one_that_does_not_exist(served) -> None:
    client, approvals, *_ = served
    unapproved = get(client, f"/v1/vehicles/{OTHER}")        # has state, not approved
    unknown = get(client, "/v1/vehicles/ZZZZZZZZZZZZZZZZZ")
    malformed = get(client, "/v1/vehicles/%3Cscript%3E")
    for answer in (unapproved, unknown, malformed):
        assert answer.status_code == 404
        assert answer.content == unknown.content
        assert answer.headers.get("etag") is None
    approvals.offer(ActivationEvent(VIN, "fleet-a", "revoked", 2))
    revoked = get(client, f"/v1/vehicles/{VIN}")
    assert (revoked.status_code, revoked.content) == (404, unknown.content)
    assert get(client, "/v1/vehicles").json() == {"vehicles": []}


def test_keys_missing_forged_or_of_another_application(served) -> None:
    client, approvals, _, cfg = served
    for key in (None, "forged-0123456789abcdef", KEY_A + "x", ""):
        answer = get(client, f"/v1/vehicles/{VIN}", key)
        assert answer.status_code == 401, key
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert get(client, f"/v1/vehicles/{VIN}", None, authorization=f"Basic {KEY_A}"
               ).status_code == 401
    # insurer-b is pseudonymous: the VIN itself is not its id
    assert get(client, f"/v1/vehicles/{VIN}", KEY_B).status_code == 404


def test_a_pseudonymous_application_never_sees_nor_takes_a_vin(served) -> None:
    client, _, sync, cfg = served
    b_id = cfg.application("insurer-b").vehicle_id(VIN)
    assert b_id.startswith("p-") and b_id != VIN
    assert get(client, "/v1/vehicles", KEY_B).json() == {"vehicles": [b_id]}
    assert get(client, "/v1/vehicles?near=48.137,11.575&radius_m=1000", KEY_B
               ).json() == {"vehicles": [b_id]}
    state = get(client, f"/v1/vehicles/{b_id}", KEY_B)
    assert state.status_code == 200 and VIN not in state.text
    # fleet-a's id of the vehicle is the VIN; insurer-b's pseudonym is nothing to fleet-a
    assert get(client, f"/v1/vehicles/{b_id}", KEY_A).status_code == 404


def test_etag_and_304(served) -> None:
    client, _, sync, _ = served
    first = get(client, f"/v1/vehicles/{VIN}")
    etag = first.headers["etag"]
    again = get(client, f"/v1/vehicles/{VIN}", **{"if-none-match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    fake_state(sync, VIN, {"diagnostics": {"odometer": [entry(
        {"value": 101.0, "unit": "kilometers"}, "2026-03-01T09:00:00.000Z")]}})
    changed = get(client, f"/v1/vehicles/{VIN}", **{"if-none-match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    listing = get(client, "/v1/vehicles")
    assert get(client, "/v1/vehicles", **{"if-none-match": listing.headers["etag"]}
               ).status_code == 304


def test_near_uses_the_geo_index_and_only_the_caller_s_vehicles(served) -> None:
    client, approvals, *_ = served
    assert get(client, "/v1/vehicles?near=48.137,11.575&radius_m=500").json() == {
        "vehicles": [VIN]}                                   # OTHER is there, not approved
    assert get(client, "/v1/vehicles?near=52.52,13.40&radius_m=500").json() == {"vehicles": []}
    approvals.offer(ActivationEvent(OTHER, "fleet-a", "approved", 1))
    assert sorted(get(client, "/v1/vehicles?near=48.137,11.575&radius_m=500").json()[
        "vehicles"]) == sorted([VIN, OTHER])


@pytest.mark.parametrize("path", [
    "/v1/vehicles?near=abc&radius_m=10", "/v1/vehicles?near=1,2", "/v1/vehicles?radius_m=5",
    "/v1/vehicles?near=91,0&radius_m=10", "/v1/vehicles?near=1,2&radius_m=-1",
    "/v1/vehicles?near=1,2&radius_m=nan", "/v1/vehicles?near=1,2,3&radius_m=10",
    "/v1/vehicles?near=1,2&radius_m=1e9",
    "/v1/geofences/depot/events?since=yesterday", "/v1/geofences/depot/events?limit=0",
    "/v1/geofences/depot/events?limit=x"])
def test_bad_parameters_answer_400(served, path: str) -> None:
    client, _, sync, _ = served
    sync.xadd(geofence_events_key("fleet-a", "depot"), {"event": b"{}"}, id="1-0")
    answer = get(client, path)
    assert answer.status_code == 400 and "error" in answer.json()


@pytest.mark.parametrize("path,status", [
    ("/v1/vehicles/../../etc/passwd", 404), ("/v1/vehicles/..%2F..%2Fetc%2Fpasswd", 404),
    (f"/v1/vehicles/{VIN}/..%2Fdiagnostics/odometer", 404),
    (f"/v1/vehicles/{VIN}/diagnostics/odometer/extra", 404), ("/v1/vehicles/" + "A" * 300, 404),
    ("/v1/nothing", 404), ("/", 404), ("/v1/vehicles?x=" + "y" * 5000, 414),
    ("/v1/vehicles/" + "A" * 600, 414), ("/v1/geofences/..%2F..%2Fx/events", 404),
    (f"/v1/vehicles/{VIN}%00", 404), ("/v1/vehicles/%ff%fe", 404),
    (f"/v1/vehicles/{VIN}%0A", 404), (f"/v1/vehicles/{VIN}/diagnostics/odometer%0A", 404),
    ("/v1/geofences/depot%0A/events", 404)])
def test_strange_paths_answer_4xx(served, path: str, status: int) -> None:
    client, *_ = served
    answer = get(client, path)
    assert answer.status_code == status


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_answer_405(served, method: str) -> None:
    client, *_ = served
    answer = client.request(method, f"/v1/vehicles/{VIN}",
                            headers={"authorization": f"Bearer {KEY_A}"})
    assert answer.status_code == 405


def test_openapi_describes_the_paths(served) -> None:
    client, *_ = served
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {"/v1/vehicles", "/v1/vehicles/{vehicle_id}",
                                  "/v1/vehicles/{vehicle_id}/{capability}/{property}",
                                  "/v1/geofences/{geofence_id}/events"}


def test_geofence_events_since_of_the_caller_s_fences_and_vehicles(served) -> None:
    client, approvals, sync, cfg = served
    b_id = cfg.application("insurer-b").vehicle_id(VIN)
    def event(vin: str, ms: int, app: str = "fleet-a") -> dict:
        return {"version": 1, "type": "geofence", "message_id": f"m{ms}", "application_id": app,
                "vin": vin, "geofence_id": "depot", "event": "enter",
                "timestamp": f"2026-03-01T08:00:0{ms // 1000}.000Z",
                "location": {"latitude": 48.1, "longitude": 11.5}}
    base = 1772352000000
    for ms, vin in ((1000, VIN), (2000, OTHER), (3000, VIN)):
        sync.xadd(geofence_events_key("fleet-a", "depot"),
                  {"event": orjson.dumps(event(vin, ms))}, id=f"{base + ms}-*")
    sync.xadd(geofence_events_key("insurer-b", "yard"),
              {"event": orjson.dumps(event(b_id, 1000, "insurer-b"))}, id=f"{base + 1000}-*")
    answer = get(client, "/v1/geofences/depot/events?since=2026-03-01T08:00:01.500Z").json()
    assert [e["message_id"] for e in answer["events"]] == ["m3000"]   # OTHER not approved
    assert len(get(client, "/v1/geofences/depot/events").json()["events"]) == 2
    # only fences configured for the caller: a stream in Redis is not enough
    assert get(client, "/v1/geofences/yard/events").status_code == 404   # another app's key
    assert get(client, "/v1/geofences/yard/events", KEY_B).status_code == 404  # not configured
    assert get(client, "/v1/geofences/depot/events", KEY_B).status_code == 404  # fleet-a's
    assert get(client, "/v1/geofences/nope/events").status_code == 404
    approvals.offer(ActivationEvent(VIN, "fleet-a", "revoked", 5))
    assert get(client, "/v1/geofences/depot/events").json()["events"] == []


def test_redis_down_answers_503_not_500() -> None:
    cfg = config()
    approvals = Approvals(cfg.applications)
    approvals.offer(ActivationEvent(VIN, "fleet-a", "approved", 1))
    server = fakeredis.FakeServer()
    server.connected = False
    api = StateApi(cfg.applications, approvals, ApiKeys({"fleet-a": [KEY_A]}),
                   fakeredis.FakeAsyncRedis(server=server))
    with TestClient(create_app(api), raise_server_exceptions=False) as client:
        answer = get(client, f"/v1/vehicles/{VIN}")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_start_up_names_a_missing_key_variable_and_missing_state() -> None:
    with pytest.raises(ConfigError, match=r"applications\[fleet-a\]\.api_keys_env: .*"
                                          r"FLEET_A_API_KEYS is not set"):
        ApiKeys.from_environment(config().applications, {"INSURER_B_API_KEYS": KEY_B})
    with pytest.raises(ConfigError, match="holds no key"):
        ApiKeys.from_environment(config().applications,
                                 {"FLEET_A_API_KEYS": " , ", "INSURER_B_API_KEYS": KEY_B})
    with pytest.raises(ConfigError, match="also a key of fleet-a"):
        ApiKeys.from_environment(config().applications,
                                 {"FLEET_A_API_KEYS": KEY_A, "INSURER_B_API_KEYS": KEY_A})
    with pytest.raises(ConfigError, match=r"^state: "):
        ApiService(config(state=False), "127.0.0.1:9", "activations",
                   environ={"FLEET_A_API_KEYS": KEY_A, "INSURER_B_API_KEYS": KEY_B})
    with pytest.raises(ConfigError, match=r"--listen"):
        parse_listen("8091")


def test_keys_are_comma_separated_and_each_maps_to_its_application() -> None:
    keys = ApiKeys.from_environment(config().applications, {
        "FLEET_A_API_KEYS": f"{KEY_A}, second-key-0123456789", "INSURER_B_API_KEYS": KEY_B})
    assert keys.application_of(f"Bearer {KEY_A}") == "fleet-a"
    assert keys.application_of("bearer second-key-0123456789") == "fleet-a"
    assert keys.application_of(f"Bearer {KEY_B}") == "insurer-b"
    assert keys.application_of("Bearer nope") is None
