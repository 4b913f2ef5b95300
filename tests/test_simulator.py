"""The fleet simulator: determinism, the raw-envelope contract, plausible physics, trouble rates."""
from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter, defaultdict
from typing import Any

import pytest

from fleetstream.mappers import MAPPERS
from fleetstream.schemas.timestamps import iso_ms, to_epoch_ms
from fleetstream.simulator import SOURCES, activations, fleet_vins, simulate, write_envelopes
from fleetstream.simulator.vehicle import vin_check_digit

KM_PER_MILE = 1.609344
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
VIN_PREFIXES = {"tesla": ("5YJ",), "bmw": ("WBA",), "mercedes": ("W1K",), "smartcar": ("1FT", "1G1", "KM8")}
CLEAN = {"error_rate": 0.0, "duplicate_rate": 0.0, "verify_rate": 0.0}


class Trouble(Exception):
    """A payload that went wrong on purpose; `kind` says how."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Trouble("unreadable") from None


def read_tesla(payload: dict) -> dict:
    values = {datum["key"]: datum["value"] for datum in payload["data"]}
    if any(value.get("invalid") for value in values.values()):
        raise Trouble("unavailable")
    scalar = {key: next(iter(value.values())) for key, value in values.items()}
    location = scalar["Location"]
    return {"times": [to_epoch_ms(payload["createdAt"])],
            "odometer_km": number(scalar["Odometer"]) * KM_PER_MILE,
            "speed_kmh": number(scalar["VehicleSpeed"]) * KM_PER_MILE,
            "soc_pct": number(scalar["Soc"]),
            "position": (location["latitude"], location["longitude"]),
            "charging": scalar.get("DetailedChargeState") == "DetailedChargeStateCharging"}


def read_bmw(payload: dict) -> dict:
    data = payload["data"]
    value = {name: descriptor["value"] for name, descriptor in data.items()}
    location = "vehicle.cabin.infotainment.navigation.currentLocation."
    soc = value.get("vehicle.drivetrain.batteryManagement.header")
    number(value.get("vehicle.drivetrain.fuelSystem.level", 0))
    times = [to_epoch_ms(payload["timestamp"])] + [to_epoch_ms(d["timestamp"]) for d in data.values()]
    return {"times": times,
            "odometer_km": number(value["vehicle.vehicle.travelledDistance"]),
            "speed_kmh": number(value["vehicle.vehicle.speed"]),
            "soc_pct": None if soc is None else number(soc),
            "position": (number(value[location + "latitude"]), number(value[location + "longitude"])),
            "charging": value.get("vehicle.drivetrain.electricEngine.charging.status") == "CHARGINGACTIVE"}


def read_mercedes(payload: dict) -> dict:
    resources = {name: inner for resource in payload["resources"] for name, inner in resource.items()}
    value = {name: inner["value"] for name, inner in resources.items()}
    soc = value.get("soc")
    number(value.get("tanklevelpercent", 0))
    return {"times": [inner["timestamp"] for inner in resources.values()],
            "odometer_km": number(value["odo"]),
            "soc_pct": None if soc is None else number(soc),
            "position": (number(value["positionLat"]), number(value["positionLong"])),
            "charging": value.get("chargingstatus") in ("0", "5", "6")}


def read_smartcar(payload: dict) -> dict:
    signals = {signal["code"]: signal for signal in payload["data"]["signals"]}
    if any(signal["status"]["value"] == "ERROR" for signal in signals.values()):
        raise Trouble("unavailable")
    body = {code: signal["body"] for code, signal in signals.items()}

    def scaled(code: str) -> float | None:
        if code not in body:
            return None
        factor = {"miles": KM_PER_MILE, "fraction": 100.0}.get(body[code].get("unit"), 1.0)
        return number(body[code]["value"]) * factor

    scaled("fuel-percentremaining")
    times = [signal["meta"].get("oemUpdatedAt", signal["meta"]["retrievedAt"]) for signal in signals.values()]
    return {"times": times + [payload["meta"]["deliveredAt"]],
            "odometer_km": scaled("odometer-traveleddistance"),
            "soc_pct": scaled("tractionbattery-stateofcharge"),
            "position": (body["location-preciselocation"]["latitude"],
                         body["location-preciselocation"]["longitude"]),
            "charging": body.get("charge-chargingstate", {}).get("value") == "CHARGING"}


READERS = {"tesla": read_tesla, "bmw": read_bmw, "mercedes": read_mercedes, "smartcar": read_smartcar}


def read(envelope: dict) -> dict:
    """The vin and the readings a test needs from one envelope; raises Trouble for a spoilt one."""
    try:
        payload = json.loads(envelope["payload"])
    except ValueError:
        raise Trouble("malformed") from None
    vin = payload["data"]["vehicle"].get("vin") if envelope["source"] == "smartcar" else payload.get("vin")
    if vin is None:
        raise Trouble("malformed")
    return {"vin": vin, **READERS[envelope["source"]](payload)}


def trouble_of(envelope: dict) -> str | None:
    try:
        read(envelope)
    except Trouble as trouble:
        return trouble.kind
    return None


def is_verify(envelope: dict) -> bool:
    return '"eventType":"VERIFY"' in envelope["payload"]


def readings_by_vin(envelopes: list[dict]) -> dict[str, list[dict]]:
    by_vin: dict[str, list[dict]] = defaultdict(list)
    for envelope in envelopes:
        reading = read(envelope)
        by_vin[reading["vin"]].append(reading)
    return by_vin


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    north = (b[0] - a[0]) * 111.32
    east = (b[1] - a[1]) * 111.32 * math.cos(math.radians(a[0]))
    return math.hypot(north, east)


@pytest.fixture(scope="module")
def day_of_driving() -> list[dict]:
    """16 well-behaved vehicles, one message a minute for 12 hours."""
    return list(simulate(16, duration_s=12 * 3600, rate=1 / 60, seed=11, **CLEAN))


def test_same_seed_gives_the_same_envelopes_and_another_seed_others() -> None:
    first = list(simulate(12, messages=400, seed=5, error_rate=0.05))
    assert first == list(simulate(12, messages=400, seed=5, error_rate=0.05))
    assert first != list(simulate(12, messages=400, seed=6, error_rate=0.05))


def test_envelopes_follow_the_raw_envelope_contract() -> None:
    for envelope in simulate(8, messages=500, seed=2, error_rate=0.1):
        assert set(envelope) == {"source", "received_at", "payload"}
        assert envelope["source"] in SOURCES
        assert ISO_MS.match(envelope["received_at"])
        assert iso_ms(to_epoch_ms(envelope["received_at"])) == envelope["received_at"]
        assert isinstance(envelope["payload"], str) and envelope["payload"]


def test_every_source_appears_with_vins_for_its_maker() -> None:
    vins_by_source = defaultdict(set)
    for envelope in simulate(40, messages=400, seed=3, **CLEAN):
        vins_by_source[envelope["source"]].add(read(envelope)["vin"])
    assert set(vins_by_source) == set(SOURCES)
    for source, vins in vins_by_source.items():
        assert len(vins) == 10
        for vin in vins:
            assert len(vin) == 17 and vin.startswith(VIN_PREFIXES[source]), vin
            assert vin[8] == vin_check_digit(vin), vin
    assert sorted(vin for vins in vins_by_source.values() for vin in vins) == sorted(fleet_vins(40, seed=3))


def test_received_at_never_goes_back_and_follows_the_payload_times(day_of_driving: list[dict]) -> None:
    received = [to_epoch_ms(envelope["received_at"]) for envelope in day_of_driving]
    assert received == sorted(received)
    for envelope, received_ms in zip(day_of_driving, received):
        times = read(envelope)["times"]
        assert 0 <= received_ms - max(times) < 3000  # bmw times are whole seconds
        assert received_ms - min(times) < 120_000


def test_odometer_never_decreases_and_positions_move_smoothly(day_of_driving: list[dict]) -> None:
    for vin, readings in readings_by_vin(day_of_driving).items():
        odometers = [reading["odometer_km"] for reading in readings]
        assert odometers == sorted(odometers), vin
        assert odometers[-1] - odometers[0] > 20, vin
        positions = [reading["position"] for reading in readings]
        assert len(set(positions)) > len(positions) / 10, vin
        for before, after in zip(positions, positions[1:]):
            assert distance_km(before, after) <= 200 / 60 + 0.01, vin


def test_soc_falls_while_driving_and_rises_while_charging(day_of_driving: list[dict]) -> None:
    tolerance_pct = 0.1  # smartcar mixes percent and fraction bodies, rounded differently
    seen = Counter()
    for readings in readings_by_vin(day_of_driving).values():
        for before, after in zip(readings, readings[1:]):
            if before["soc_pct"] is None or after["soc_pct"] is None:
                continue
            change = after["soc_pct"] - before["soc_pct"]
            if before["charging"] and after["charging"]:
                assert change >= -tolerance_pct
                seen["charging rise"] += change > 0
            elif not before["charging"] and not after["charging"] and \
                    after["odometer_km"] > before["odometer_km"]:
                assert change <= tolerance_pct
                seen["driving fall"] += change < 0
    assert seen["charging rise"] > 20 and seen["driving fall"] > 100, seen


def test_error_rate_zero_gives_only_readable_payloads_with_vins() -> None:
    envelopes = list(simulate(20, messages=3000, seed=4, error_rate=0.0, verify_rate=0.01))
    verify_events = [envelope for envelope in envelopes if is_verify(envelope)]
    assert verify_events and {envelope["source"] for envelope in verify_events} == {"smartcar"}
    for envelope in envelopes:
        if not is_verify(envelope):
            assert trouble_of(envelope) is None, envelope


def test_errors_appear_at_about_the_configured_rate() -> None:
    envelopes = list(simulate(20, messages=6000, seed=9, error_rate=0.09,
                              duplicate_rate=0.0, verify_rate=0.0))
    kinds = Counter(trouble_of(envelope) for envelope in envelopes)
    spoilt = len(envelopes) - kinds[None]
    assert 0.07 < spoilt / len(envelopes) < 0.11, kinds
    assert 0.25 < kinds["malformed"] / spoilt < 0.42, kinds
    assert kinds["unavailable"] and kinds["unreadable"], kinds
    troubled_sources = {(envelope["source"], trouble_of(envelope)) for envelope in envelopes}
    assert {("tesla", "unavailable"), ("smartcar", "unavailable"), ("bmw", "unreadable"),
            ("mercedes", "unreadable")} <= troubled_sources


def test_the_mappers_read_what_the_simulator_writes() -> None:
    """Clean payloads map fully; spoilt ones fail or come out partial, as their trouble says."""
    outcomes = {None: "ok", "unavailable": "ok", "unreadable": "partial", "malformed": "failed"}
    for envelope in simulate(12, messages=1500, seed=12, rate=1 / 30, error_rate=0.2, verify_rate=0.02):
        result = MAPPERS[envelope["source"]](envelope["payload"], to_epoch_ms(envelope["received_at"]))
        expected = "ignored" if is_verify(envelope) else outcomes[trouble_of(envelope)]
        assert result.outcome == expected, (envelope, result)


def test_duplicates_repeat_the_envelope_exactly() -> None:
    envelopes = list(simulate(10, messages=2000, seed=8, error_rate=0.0, duplicate_rate=0.05))
    repeats = sum(before == after for before, after in zip(envelopes, envelopes[1:]))
    assert 50 < repeats < 150


def test_rate_and_duration_set_the_message_count_and_spacing() -> None:
    envelopes = list(simulate(10, duration_s=600, rate=0.5, seed=1, **CLEAN))
    assert len(envelopes) == 10 * 600 * 0.5
    assert {len(readings) for readings in readings_by_vin(envelopes).values()} == {300}
    start_ms = to_epoch_ms("2026-03-01T08:00:00Z")
    made_by_vin = defaultdict(list)
    for envelope in envelopes:
        if envelope["source"] in ("tesla", "mercedes"):  # one millisecond time per message
            reading = read(envelope)
            made_by_vin[reading["vin"]].append(max(reading["times"]))
    for made in made_by_vin.values():
        assert start_ms <= made[0] < start_ms + 2000 and made[-1] < start_ms + 600_000
        assert {after - before for before, after in zip(made, made[1:])} <= {1999, 2000, 2001}


def test_messages_caps_the_stream() -> None:
    assert len(list(simulate(5, messages=123, seed=1))) == 123
    assert len(list(simulate(5, messages=10_000, duration_s=60, rate=1, seed=1, **CLEAN))) == 300
    endless = simulate(3, seed=1)
    assert len([next(endless) for _ in range(1000)]) == 1000


@pytest.mark.parametrize("name", ["envelopes.jsonl", "envelopes.jsonl.gz"])
def test_write_envelopes_writes_json_lines(tmp_path, name: str) -> None:
    path = tmp_path / name
    assert write_envelopes(path, simulate(6, messages=5000, seed=2)) == 5000
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as lines:
        assert [json.loads(line) for line in lines] == list(simulate(6, messages=5000, seed=2))


def test_activations_cover_the_fleet_mostly_approved() -> None:
    events = activations(200, ["fleet-a", "insurer-b"], seed=3)
    assert events == activations(200, ["fleet-a", "insurer-b"], seed=3)
    assert [event["at"] for event in events] == sorted(event["at"] for event in events)
    final = {}
    for event in events:
        assert set(event) == {"vin", "application_id", "status", "at"} and ISO_MS.match(event["at"])
        if event["status"] == "revoked":
            assert final[event["vin"], event["application_id"]] == "approved"
        final[event["vin"], event["application_id"]] = event["status"]
    assert {vin for vin, _ in final} == set(fleet_vins(200, seed=3))
    statuses = Counter(final.values())
    assert len(final) == 400 and statuses["approved"] > 300
    assert statuses["pending"] and statuses["revoked"] and statuses["rejected"], statuses


@pytest.mark.parametrize("arguments", [
    {"vehicles": 0}, {"vehicles": 3, "rate": 0}, {"vehicles": 3, "messages": -1},
    {"vehicles": 3, "duration_s": -5}, {"vehicles": 3, "error_rate": 1.5},
    {"vehicles": 3, "sources": ["volvo"]}, {"vehicles": 3, "sources": []}])
def test_bad_arguments_are_refused(arguments: dict) -> None:
    with pytest.raises(ValueError):
        simulate(**arguments)
