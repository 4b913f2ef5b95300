"""Golden payloads for the bmw mapper: every descriptor of DATA-CONTRACTS §3 (bmw)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from fleetstream.mappers.bmw import map_payload

VIN = "WBA00000000000001"
SENT = "2026-03-01T08:15:31Z"
AT = "2026-03-01T08:15:30Z"
AT_ISO = "2026-03-01T08:15:30.000Z"
RECEIVED_MS = 1772352932250
LOCATION = "vehicle.cabin.infotainment.navigation.currentLocation"


def message(data: dict[str, Any], **fields: Any) -> bytes:
    """A streaming message over `data` (descriptor -> record)."""
    return orjson.dumps({"vin": VIN, "timestamp": SENT, "data": data, **fields})


def datum(value: Any, unit: str | None = None, timestamp: Any = AT) -> dict[str, Any]:
    record = {"value": value, "timestamp": timestamp}
    if unit is not None:
        record["unit"] = unit
    return record


def entry(data: Any, timestamp: str = AT_ISO) -> dict[str, Any]:
    return {"data": data, "timestamp": timestamp}


def format_failure(field: str, reason: str, timestamp: str = AT_ISO) -> dict[str, Any]:
    return {"failure": {"reason": "format_error", "description": f"{field}: {reason}"},
            "timestamp": timestamp}


def test_contract_example() -> None:
    result = map_payload(
        '{"vin": "WBA00000000000001", "timestamp": "2026-03-01T08:15:31Z",'
        ' "data": {"vehicle.vehicle.travelledDistance": {"value": 48213, "unit": "km", "timestamp": "2026-03-01T08:15:30Z"},'
        '          "vehicle.drivetrain.batteryManagement.header": {"value": "72", "unit": "PERCENT", "timestamp": "2026-03-01T08:15:30Z"}}}',
        RECEIVED_MS)
    assert (result.vin, result.outcome, result.errors) == (VIN, "ok", [])
    assert result.newest_ms == 1772352930000
    assert result.data == {
        "diagnostics": {"odometer": [entry({"value": 48213.0, "unit": "kilometers"})]},
        "charging": {"battery_level": [entry(0.72)]},
    }


@pytest.mark.parametrize("descriptor, record, capability, name, expected", [
    ("vehicle.vehicle.travelledDistance", datum("48213.5", "km"), "diagnostics", "odometer",
     {"value": 48213.5, "unit": "kilometers"}),
    ("vehicle.vehicle.speed", datum(88, "km/h"), "diagnostics", "speed",
     {"value": 88.0, "unit": "kilometers_per_hour"}),
    ("vehicle.drivetrain.batteryManagement.header", datum(72, "%"), "charging", "battery_level", 0.72),
    ("vehicle.drivetrain.batteryManagement.header", datum(72, "percent"), "charging",
     "battery_level", 0.72),
    ("vehicle.drivetrain.batteryManagement.header", datum("72", "PERCENT"), "charging",
     "battery_level", 0.72),
    ("vehicle.drivetrain.electricEngine.remainingElectricRange", datum(312, "km"), "charging",
     "estimated_range", {"value": 312.0, "unit": "kilometers"}),
    ("vehicle.drivetrain.electricEngine.charging.level", datum(80, "%"), "charging",
     "charge_limit", 0.8),
    ("vehicle.drivetrain.fuelSystem.level", datum("57", "percent"), "diagnostics", "fuel_level", 0.57),
    (f"{LOCATION}.heading", datum(181), "vehicle_location", "heading",
     {"value": 181.0, "unit": "degrees"}),
    ("vehicle.chassis.axle.row1.wheel.left.tire.pressure", datum(240, "kPa"), "diagnostics",
     "tire_pressures", {"location": "front_left", "pressure": {"value": 2.4, "unit": "bars"}}),
    ("vehicle.chassis.axle.row1.wheel.right.tire.pressure", datum("250", "kpa"), "diagnostics",
     "tire_pressures", {"location": "front_right", "pressure": {"value": 2.5, "unit": "bars"}}),
    ("vehicle.chassis.axle.row2.wheel.left.tire.pressure", datum(260, "KPA"), "diagnostics",
     "tire_pressures", {"location": "rear_left", "pressure": {"value": 2.6, "unit": "bars"}}),
    ("vehicle.chassis.axle.row2.wheel.right.tire.pressure", datum(270, "kPa"), "diagnostics",
     "tire_pressures", {"location": "rear_right", "pressure": {"value": 2.7, "unit": "bars"}}),
    ("vehicle.cabin.hvac.outsideTemperature", datum(-3.5, "celsius"), "climate",
     "outside_temperature", {"value": -3.5, "unit": "celsius"}),
    ("vehicle.cabin.hvac.outsideTemperature", datum("12", "°C"), "climate",
     "outside_temperature", {"value": 12.0, "unit": "celsius"}),
])
def test_each_descriptor_and_unit_spelling(descriptor: str, record: dict[str, Any], capability: str,
                                           name: str, expected: Any) -> None:
    result = map_payload(message({descriptor: record}), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {capability: {name: [entry(expected)]}}


@pytest.mark.parametrize("descriptor, code, capability, name, expected", [
    ("vehicle.drivetrain.electricEngine.charging.status", "CHARGINGACTIVE", "charging", "status",
     "charging"),
    ("vehicle.drivetrain.electricEngine.charging.status", "CHARGINGENDED", "charging", "status",
     "charging_complete"),
    ("vehicle.drivetrain.electricEngine.charging.status", "CHARGINGPAUSED", "charging", "status",
     "charging_paused"),
    ("vehicle.drivetrain.electricEngine.charging.status", "CHARGINGERROR", "charging", "status",
     "charging_error"),
    ("vehicle.drivetrain.electricEngine.charging.status", "NOCHARGING", "charging", "status",
     "not_charging"),
    ("vehicle.body.chargingPort.status", "CONNECTED", "charging", "plugged_in", "plugged_in"),
    ("vehicle.body.chargingPort.status", "DISCONNECTED", "charging", "plugged_in", "disconnected"),
    ("vehicle.cabin.door.lock.status", "SECURED", "doors", "locks_state", "locked"),
    ("vehicle.cabin.door.lock.status", "LOCKED", "doors", "locks_state", "locked"),
    ("vehicle.cabin.door.lock.status", "UNLOCKED", "doors", "locks_state", "unlocked"),
])
def test_each_enum_code(descriptor: str, code: str, capability: str, name: str, expected: str) -> None:
    result = map_payload(message({descriptor: datum(code)}), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {capability: {name: [entry(expected)]}}


@pytest.mark.parametrize("descriptor, record, capability, name, reason", [
    ("vehicle.vehicle.travelledDistance", datum(30000, "mi"), "diagnostics", "odometer",
     "unit 'mi' is not one of km"),
    ("vehicle.vehicle.travelledDistance", datum(30000), "diagnostics", "odometer",
     "unit None is not one of km"),
    ("vehicle.vehicle.travelledDistance", datum("lots", "km"), "diagnostics", "odometer",
     "not a number: 'lots'"),
    ("vehicle.vehicle.speed", datum(501, "km/h"), "diagnostics", "speed", "501 is outside 0 to 500"),
    ("vehicle.drivetrain.fuelSystem.level", datum(0.5, "fraction"), "diagnostics", "fuel_level",
     "unit 'fraction' is not one of %, percent"),
    ("vehicle.drivetrain.batteryManagement.header", datum(120, "%"), "charging", "battery_level",
     "1.2 is outside 0 to 1"),
    ("vehicle.chassis.axle.row1.wheel.left.tire.pressure", datum(2.4, "bar"), "diagnostics",
     "tire_pressures", "unit 'bar' is not one of kPa"),
    ("vehicle.cabin.hvac.outsideTemperature", datum(50, "°F"), "climate", "outside_temperature",
     "unit '°F' is not one of celsius, °C"),
    ("vehicle.cabin.door.lock.status", datum("SELECTIVELOCKED"), "doors", "locks_state",
     "unknown code 'SELECTIVELOCKED'"),
    ("vehicle.body.chargingPort.status", datum(None), "charging", "plugged_in", "unknown code None"),
    ("vehicle.vehicle.speed", datum(50, "km/h", timestamp="soon"), "diagnostics", "speed",
     "unreadable timestamp 'soon'"),
    ("vehicle.vehicle.speed", [50, "km/h"], "diagnostics", "speed",
     "expected an object, got [50, 'km/h']"),
])
def test_unreadable_values_are_format_errors(descriptor: str, record: Any, capability: str,
                                             name: str, reason: str) -> None:
    result = map_payload(message({descriptor: record}), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": descriptor, "reason": reason}]
    timestamp = AT_ISO if type(record) is dict and record["timestamp"] == AT else "2026-03-01T08:15:31.000Z"
    assert result.data == {capability: {name: [format_failure(descriptor, reason, timestamp)]}}


def test_latitude_and_longitude_combine_with_the_later_time() -> None:
    result = map_payload(message({
        f"{LOCATION}.latitude": datum(48.1374, timestamp="2026-03-01T08:15:29Z"),
        f"{LOCATION}.longitude": datum("11.5755", "degrees", timestamp=AT)}), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"vehicle_location": {"coordinates": [
        entry({"latitude": 48.1374, "longitude": 11.5755})]}}
    assert result.newest_ms == 1772352930000


@pytest.mark.parametrize("present, missing", [("latitude", "longitude"), ("longitude", "latitude")])
def test_half_a_location_is_a_format_error_naming_the_missing_half(present: str, missing: str) -> None:
    result = map_payload(message({f"{LOCATION}.{present}": datum(10)}), RECEIVED_MS)
    reason = "missing while the other half of the location is present"
    assert result.outcome == "partial"
    assert result.errors == [{"field": f"{LOCATION}.{missing}", "reason": reason}]
    assert result.data == {"vehicle_location": {"coordinates": [
        format_failure(f"{LOCATION}.{missing}", reason)]}}


def test_an_unreadable_half_makes_the_coordinates_a_format_error() -> None:
    result = map_payload(message({f"{LOCATION}.latitude": datum(100),
                                  f"{LOCATION}.longitude": datum(11.5)}), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": f"{LOCATION}.latitude", "reason": "100 is outside -90 to 90"}]
    assert result.data == {"vehicle_location": {"coordinates": [
        format_failure(f"{LOCATION}.latitude", "100 is outside -90 to 90")]}}


def test_descriptor_times_fall_back_to_the_message_then_the_receive_time() -> None:
    record = {"value": 10, "unit": "km"}
    result = map_payload(message({"vehicle.vehicle.travelledDistance": record}), RECEIVED_MS)
    assert result.data["diagnostics"]["odometer"][0]["timestamp"] == "2026-03-01T08:15:31.000Z"
    result = map_payload(orjson.dumps({"vin": VIN, "data": {"vehicle.vehicle.travelledDistance": record}}),
                         RECEIVED_MS)
    assert result.data["diagnostics"]["odometer"][0]["timestamp"] == "2026-03-01T08:15:32.250Z"
    assert result.newest_ms == RECEIVED_MS


def test_each_descriptor_keeps_its_own_time() -> None:
    result = map_payload(message({
        "vehicle.vehicle.speed": datum(30, "km/h", timestamp="2026-03-01T08:15:28.125Z"),
        "vehicle.vehicle.travelledDistance": datum(10, "km", timestamp=1772352931000)}), RECEIVED_MS)
    assert result.data["diagnostics"] == {
        "speed": [entry({"value": 30.0, "unit": "kilometers_per_hour"}, "2026-03-01T08:15:28.125Z")],
        "odometer": [entry({"value": 10.0, "unit": "kilometers"}, "2026-03-01T08:15:31.000Z")]}
    assert result.newest_ms == 1772352931000


def test_unknown_descriptors_are_ignored() -> None:
    result = map_payload(message({"vehicle.cabin.seat.row1.driverSide.heating": datum(3),
                                  "vehicle.vehicle.speed": datum(30, "KM/H")}), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"diagnostics": {"speed": [
        entry({"value": 30.0, "unit": "kilometers_per_hour"})]}}


@pytest.mark.parametrize("payload, field", [
    (b"{", "payload"),
    (b"\"text\"", "payload"),
    (orjson.dumps({"timestamp": SENT, "data": {}}), "vin"),
    (orjson.dumps({"vin": None, "timestamp": SENT, "data": {}}), "vin"),
    (orjson.dumps({"vin": VIN, "timestamp": SENT, "data": []}), "data"),
    (orjson.dumps({"vin": VIN, "timestamp": SENT}), "data"),
    (orjson.dumps({"vin": VIN, "timestamp": {"at": SENT}, "data": {}}), "timestamp"),
])
def test_unreadable_messages_fail(payload: bytes, field: str) -> None:
    result = map_payload(payload, RECEIVED_MS)
    assert (result.outcome, result.data, result.newest_ms) == ("failed", {}, None)
    assert [error["field"] for error in result.errors] == [field]
