"""Property tests: no mapper ever raises, and every result keeps the output contract.

Inputs: arbitrary bytes and text, arbitrary JSON values, and valid payloads of each
source with random mutations (keys dropped, values replaced by random or nasty JSON,
wrong types, huge numbers, "NaN" strings, nested garbage).
"""
from __future__ import annotations

import copy
import math
import random
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetstream.mappers import BINARY_SOURCES, MAPPERS
from fleetstream.mappers.base import FAILED, IGNORED, OK, PARTIAL, MapResult
from fleetstream.mappers.entries import LATITUDE_RANGE, LONGITUDE_RANGE
from fleetstream.schemas.catalogue import (
    COORDINATES, ENUM, FRACTION, NUMBER, PROPERTIES, TIRE_LOCATIONS, TIRE_PRESSURE)
from fleetstream.schemas.timestamps import to_epoch_ms

RECEIVED_MS = 1772352931020
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FAILURE_REASONS = {"unavailable", "oem_error", "format_error"}

#: one valid payload per source, feeding as many properties as it can
SAMPLES: dict[str, Any] = {
    "tesla": {"vin": "5YJ3E7EB0KF000001", "createdAt": "2026-03-01T08:15:30.500Z", "data": [
        {"key": "VehicleSpeed", "value": {"stringValue": "37.2"}},
        {"key": "Odometer", "value": {"doubleValue": 12873.4}},
        {"key": "Soc", "value": {"stringValue": "71.5"}},
        {"key": "BatteryLevel", "value": {"intValue": 70}},
        {"key": "EstBatteryRange", "value": {"doubleValue": 201.3}},
        {"key": "Location", "value": {"locationValue": {"latitude": 52.52, "longitude": 13.405}}},
        {"key": "GpsHeading", "value": {"intValue": 180}},
        {"key": "Locked", "value": {"booleanValue": True}},
        {"key": "DetailedChargeState", "value": {"stringValue": "DetailedChargeStateCharging"}},
        {"key": "ChargeLimitSoc", "value": {"longValue": "80"}},
        {"key": "ACChargingPower", "value": {"doubleValue": 7.2}},
        {"key": "DCChargingPower", "value": {"invalid": True}},
        {"key": "OutsideTemp", "value": {"floatValue": 11.5}},
        {"key": "InsideTemp", "value": {"doubleValue": 20.5}},
        {"key": "TpmsPressureFl", "value": {"doubleValue": 2.9}},
        {"key": "TpmsPressureRr", "value": {"invalid": True}}]},
    "bmw": {"vin": "WBA00000000000001", "timestamp": "2026-03-01T08:15:31Z", "data": {
        "vehicle.vehicle.travelledDistance": {"value": 48213, "unit": "km", "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.vehicle.speed": {"value": "48", "unit": "km/h", "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.drivetrain.batteryManagement.header": {"value": "72", "unit": "PERCENT", "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.drivetrain.electricEngine.charging.status": {"value": "CHARGINGACTIVE", "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.body.chargingPort.status": {"value": "CONNECTED", "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.cabin.infotainment.navigation.currentLocation.latitude": {"value": 48.1, "timestamp": "2026-03-01T08:15:29Z"},
        "vehicle.cabin.infotainment.navigation.currentLocation.longitude": {"value": 11.5, "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.cabin.door.lock.status": {"value": "SECURED", "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.chassis.axle.row1.wheel.left.tire.pressure": {"value": 240, "unit": "kPa", "timestamp": "2026-03-01T08:15:30Z"},
        "vehicle.cabin.hvac.outsideTemperature": {"value": 4, "unit": "°C"}}},
    "mercedes": {"vin": "W1K00000000000001", "resources": [
        {"odo": {"value": "48213", "timestamp": 1740816930000}},
        {"soc": {"value": "56", "timestamp": 1740816930000}},
        {"rangeliquid": {"value": "410", "timestamp": 1740816930000}},
        {"positionLat": {"value": "48.78", "timestamp": 1740816930000}},
        {"positionLong": {"value": "9.18", "timestamp": 1740816931000}},
        {"doorlockstatusvehicle": {"value": "2", "timestamp": 1740816931000}},
        {"tirepressurefrontleft": {"value": "240", "timestamp": 1740816930000}},
        {"chargingstatus": {"value": "5", "timestamp": 1740816930000}},
        {"ignitionstate": {"value": "4", "timestamp": 1740816930000}}]},
    "smartcar": {"eventId": "e1", "eventType": "VEHICLE_STATE", "meta": {"version": "4.0"}, "data": {
        "vehicle": {"id": "v1", "make": "FORD", "vin": "1FTFW1E50NFA00001"}, "signals": [
            {"code": "tractionbattery-stateofcharge", "body": {"unit": "percent", "value": 75},
             "status": {"value": "SUCCESS"}, "meta": {"oemUpdatedAt": 1740816930000}},
            {"code": "odometer-traveleddistance", "body": {"unit": "miles", "value": 30000},
             "status": {"value": "SUCCESS"}, "meta": {"retrievedAt": 1740816931000}},
            {"code": "location-preciselocation", "body": {"latitude": 52.5, "longitude": 13.4, "heading": 90},
             "status": {"value": "SUCCESS"}, "meta": {"oemUpdatedAt": 1740816930000}},
            {"code": "charge-chargingstate", "body": {"value": "CHARGING"}, "status": {"value": "SUCCESS"}},
            {"code": "closure-islocked", "status": {"value": "ERROR",
             "error": {"code": "VEHICLE_NOT_CAPABLE", "type": "COMPATIBILITY"}}}]}},
}

NASTY = st.sampled_from([
    "NaN", "nan", "Infinity", "-inf", "1e999", "-1e999", "", " ", "0x10", "1_000", "٣", "null",
    "true", "2026-13-45T99:99:99Z", 1e308, -1e308, 2**63 - 1, -2**63, 2**64 - 1, -0.0, 5e-324,
    1e20, -1, [], {}, [[[]]], {"": {"": None}}])
SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | \
    st.text(max_size=12) | NASTY
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn, sample: Any) -> Any:
    """`sample` with one to six random mutations somewhere inside."""
    document = copy.deepcopy(sample)
    chooser = draw(st.randoms(use_true_random=False))  # uniform over nodes, unlike sampled_from
    for _ in range(draw(st.integers(1, 6))):
        _mutate(draw, chooser, document)
    return document


def _mutate(draw: st.DrawFn, chooser: random.Random, document: Any) -> None:
    """Drop, retype or replace with random JSON one node below the top of `document`."""
    paths = list(_paths(document))[1:]
    if not paths:
        return
    path = chooser.choice(paths)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    node = parent[path[-1]]
    if draw(st.integers(0, 4)) == 0:
        del parent[path[-1]]
    else:
        replacement = draw(st.one_of(JSON, st.just(str(node)), st.just([node]),
                                     st.just({"value": node})))
        parent[path[-1]] = copy.deepcopy(replacement)  # never alter NASTY's lists and dicts


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Any:
    """The path (keys and indexes) of `node` and of everything inside it."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


def check(source: str, result: MapResult) -> None:
    """Every invariant of a mapper's result (DATA-CONTRACTS §2, §4, §5)."""
    assert isinstance(result, MapResult)
    assert result.outcome in {OK, PARTIAL, FAILED, IGNORED}
    if result.outcome in (FAILED, IGNORED):
        assert (result.data, result.newest_ms) == ({}, None)
        assert bool(result.errors) == (result.outcome == FAILED)
        assert source in ("smartcar", "tesla_telemetry") or result.outcome == FAILED
        for error in result.errors:
            assert isinstance(error["field"], str) and isinstance(error["reason"], str)
        return
    assert isinstance(result.vin, str) and result.vin
    assert (result.outcome == PARTIAL) == bool(result.errors)
    format_errors, times = [], []
    for capability, properties in result.data.items():
        for name, entries in properties.items():
            spec = PROPERTIES[f"{capability}.{name}"]
            assert entries
            for entry in entries:
                assert ISO_MS.fullmatch(entry["timestamp"])
                times.append(to_epoch_ms(entry["timestamp"]))
                if "failure" in entry:
                    assert set(entry) == {"failure", "timestamp"}
                    assert entry["failure"]["reason"] in FAILURE_REASONS
                    assert isinstance(entry["failure"]["description"], str)
                    if entry["failure"]["reason"] == "format_error":
                        format_errors.append(entry["failure"]["description"])
                else:
                    assert set(entry) == {"data", "timestamp"}
                    check_data(spec, entry["data"])
    assert len(format_errors) == len(result.errors)
    for error, description in zip(sorted(e["field"] for e in result.errors), sorted(format_errors)):
        assert description.startswith(f"{error}: ")
    assert result.newest_ms == (max(times) if times else None)
    orjson.dumps(result.data)


def check_data(spec: Any, data: Any) -> None:
    """`data` has the shape, unit and range its catalogue row says."""
    if spec.kind == NUMBER:
        assert data["unit"] == spec.unit and set(data) == {"value", "unit"}
        in_range(data["value"], spec.minimum, spec.maximum)
    elif spec.kind == FRACTION:
        in_range(data, spec.minimum, spec.maximum)
    elif spec.kind == ENUM:
        assert data in spec.values
    elif spec.kind == COORDINATES:
        assert set(data) == {"latitude", "longitude"}
        in_range(data["latitude"], *LATITUDE_RANGE)
        in_range(data["longitude"], *LONGITUDE_RANGE)
    else:
        assert spec.kind == TIRE_PRESSURE and data["location"] in TIRE_LOCATIONS
        assert data["pressure"]["unit"] == spec.unit
        in_range(data["pressure"]["value"], spec.minimum, spec.maximum)


def in_range(value: Any, low: float, high: float) -> None:
    assert type(value) is float and math.isfinite(value) and low <= value <= high


def test_every_mapper_has_a_sample_that_maps_cleanly() -> None:
    # binary sources have fuzz tests of their own (tests/test_mapper_tesla_telemetry_fuzz.py)
    assert set(SAMPLES) == set(MAPPERS) - BINARY_SOURCES
    for source, sample in SAMPLES.items():
        result = MAPPERS[source](orjson.dumps(sample), RECEIVED_MS)
        check(source, result)
        assert result.outcome == OK and len(result.data) >= 3


@pytest.mark.parametrize("source", sorted(MAPPERS))
@FUZZ
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes(source: str, payload: bytes) -> None:
    check(source, MAPPERS[source](payload, RECEIVED_MS))


@pytest.mark.parametrize("source", sorted(MAPPERS))
@FUZZ
@given(payload=st.text(max_size=300))
def test_arbitrary_text(source: str, payload: str) -> None:
    check(source, MAPPERS[source](payload, RECEIVED_MS))


@pytest.mark.parametrize("source", sorted(SAMPLES))
@FUZZ
@given(document=JSON, as_text=st.booleans())
def test_arbitrary_json(source: str, document: Any, as_text: bool) -> None:
    payload = orjson.dumps(document)
    check(source, MAPPERS[source](payload.decode() if as_text else payload, RECEIVED_MS))


@pytest.mark.parametrize("source", sorted(SAMPLES))
@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_mutated_samples(source: str, data: st.DataObject) -> None:
    document = data.draw(mutated(SAMPLES[source]))
    check(source, MAPPERS[source](orjson.dumps(document), RECEIVED_MS))


@pytest.mark.parametrize("source", sorted(SAMPLES))
def test_values_nested_as_deep_as_json_allows(source: str) -> None:
    """Each node of the sample in turn becomes arrays nested to orjson's limit of 1,024 levels."""
    for path in list(_paths(SAMPLES[source]))[1:]:
        document = copy.deepcopy(SAMPLES[source])
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = "\x00deep"
        levels = 1024 - len(path)  # the node sits inside len(path) containers
        payload = orjson.dumps(document).replace(b'"\\u0000deep"',
                                                 b"[" * levels + b"]" * levels)
        orjson.loads(payload)  # still JSON: the mapper, not the parser, meets the depth
        check(source, MAPPERS[source](payload, RECEIVED_MS))
