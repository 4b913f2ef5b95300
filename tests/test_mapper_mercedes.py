"""Golden payloads for the mercedes mapper: every resource of DATA-CONTRACTS §3 (mercedes)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from fleetstream.mappers.mercedes import map_payload

VIN = "W1K00000000000001"
AT_MS = 1740816930000
AT_ISO = "2025-03-01T08:15:30.000Z"
RECEIVED_MS = 1740816935500


def message(*resources: tuple[str, Any, Any]) -> bytes:
    """A pushed message of `(resource, value, timestamp)` triples."""
    return orjson.dumps({"vin": VIN, "resources": [
        {name: {"value": value, "timestamp": timestamp}} for name, value, timestamp in resources]})


def entry(data: Any, timestamp: str = AT_ISO) -> dict[str, Any]:
    return {"data": data, "timestamp": timestamp}


def test_contract_example() -> None:
    result = map_payload(
        '{"vin": "W1K00000000000001",'
        ' "resources": [{"odo": {"value": "48213", "timestamp": 1740816930000}},'
        '               {"soc": {"value": "56", "timestamp": 1740816930000}},'
        '               {"doorlockstatusvehicle": {"value": "2", "timestamp": 1740816931000}}]}',
        RECEIVED_MS)
    assert (result.vin, result.outcome, result.errors) == (VIN, "ok", [])
    assert result.newest_ms == 1740816931000
    assert result.data == {
        "diagnostics": {"odometer": [entry({"value": 48213.0, "unit": "kilometers"})]},
        "charging": {"battery_level": [entry(0.56)]},
        "doors": {"locks_state": [entry("locked", "2025-03-01T08:15:31.000Z")]},
    }


@pytest.mark.parametrize("resource, value, capability, name, expected", [
    ("odo", "48213", "diagnostics", "odometer", {"value": 48213.0, "unit": "kilometers"}),
    ("soc", "56", "charging", "battery_level", 0.56),
    ("rangeelectric", "310", "charging", "estimated_range", {"value": 310.0, "unit": "kilometers"}),
    ("rangeliquid", "540", "diagnostics", "estimated_range", {"value": 540.0, "unit": "kilometers"}),
    ("tanklevelpercent", "43", "diagnostics", "fuel_level", 0.43),
    ("positionHeading", "359.5", "vehicle_location", "heading", {"value": 359.5, "unit": "degrees"}),
    ("tirepressurefrontleft", "240", "diagnostics", "tire_pressures",
     {"location": "front_left", "pressure": {"value": 2.4, "unit": "bars"}}),
    ("tirepressurefrontright", "247.5", "diagnostics", "tire_pressures",
     {"location": "front_right", "pressure": {"value": 2.475, "unit": "bars"}}),
    ("tirepressurerearleft", "260", "diagnostics", "tire_pressures",
     {"location": "rear_left", "pressure": {"value": 2.6, "unit": "bars"}}),
    ("tirepressurerearright", 270, "diagnostics", "tire_pressures",
     {"location": "rear_right", "pressure": {"value": 2.7, "unit": "bars"}}),
    ("maxSoc", "80", "charging", "charge_limit", 0.8),
    ("outsidetemperature", "-7.5", "climate", "outside_temperature",
     {"value": -7.5, "unit": "celsius"}),
])
def test_each_resource(resource: str, value: Any, capability: str, name: str, expected: Any) -> None:
    result = map_payload(message((resource, value, AT_MS)), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {capability: {name: [entry(expected)]}}


@pytest.mark.parametrize("resource, code, capability, name, expected", [
    *(("doorlockstatusvehicle", code, "doors", "locks_state", expected)
      for code, expected in (("0", "unlocked"), ("1", "locked"), ("2", "locked"), ("3", "unlocked"))),
    *(("chargingstatus", str(code), "charging", "status", expected) for code, expected in (
        (0, "charging"), (1, "charging_complete"), (2, "charging_paused"), (3, "not_charging"),
        (4, "charging_error"), (5, "charging"), (6, "charging"), (7, "not_charging"),
        (8, "not_charging"), (9, "not_charging"), (10, "not_charging"), (11, "not_charging"),
        (12, "not_charging"), (13, "not_charging"), (14, "not_charging"), (15, "not_charging"))),
    *(("ignitionstate", code, "ignition", "state", expected) for code, expected in (
        ("0", "lock"), ("1", "off"), ("2", "accessory"), ("4", "on"), ("5", "start"))),
    ("ignitionstate", 4, "ignition", "state", "on"),
])
def test_each_code(resource: str, code: Any, capability: str, name: str, expected: str) -> None:
    result = map_payload(message((resource, code, AT_MS)), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {capability: {name: [entry(expected)]}}


@pytest.mark.parametrize("resource, value, capability, name, reason", [
    ("ignitionstate", "3", "ignition", "state", "unknown code '3'"),
    ("chargingstatus", "16", "charging", "status", "unknown code '16'"),
    ("doorlockstatusvehicle", "locked", "doors", "locks_state", "unknown code 'locked'"),
    ("odo", "48,213", "diagnostics", "odometer", "not a number: '48,213'"),
    ("odo", "2000001", "diagnostics", "odometer", "2000001 is outside 0 to 2000000"),
    ("soc", "", "charging", "battery_level", "not a number: ''"),
    ("tirepressurefrontleft", "1200", "diagnostics", "tire_pressures", "12 is outside 0 to 10"),
    ("positionHeading", "-1", "vehicle_location", "heading", "-1 is outside 0 to 360"),
    ("outsidetemperature", "inf", "climate", "outside_temperature", "inf is outside -80 to 80"),
])
def test_unreadable_values_are_format_errors(resource: str, value: Any, capability: str, name: str,
                                             reason: str) -> None:
    result = map_payload(message((resource, value, AT_MS), ("odo", "5", AT_MS)), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": resource, "reason": reason}]
    assert result.data[capability][name][0] == {
        "failure": {"reason": "format_error", "description": f"{resource}: {reason}"},
        "timestamp": AT_ISO}


def test_position_halves_combine_with_the_later_time() -> None:
    result = map_payload(message(("positionLong", "9.18", AT_MS + 900), ("positionLat", "48.78", AT_MS)),
                         RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"vehicle_location": {"coordinates": [
        entry({"latitude": 48.78, "longitude": 9.18}, "2025-03-01T08:15:30.900Z")]}}
    assert result.newest_ms == AT_MS + 900


def test_a_failed_half_takes_the_later_time_of_the_two() -> None:
    result = map_payload(message(("positionLat", "48.78", None), ("positionLong", "east", AT_MS)),
                         RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": "positionLong", "reason": "not a number: 'east'"}]
    assert result.data == {"vehicle_location": {"coordinates": [{
        "failure": {"reason": "format_error", "description": "positionLong: not a number: 'east'"},
        "timestamp": "2025-03-01T08:15:35.500Z"}]}}
    assert result.newest_ms == RECEIVED_MS


@pytest.mark.parametrize("present, missing", [("positionLat", "positionLong"),
                                              ("positionLong", "positionLat")])
def test_half_a_position_is_a_format_error(present: str, missing: str) -> None:
    result = map_payload(message((present, "45", AT_MS)), RECEIVED_MS)
    reason = "missing while the other half of the location is present"
    assert result.outcome == "partial"
    assert result.errors == [{"field": missing, "reason": reason}]
    assert result.data == {"vehicle_location": {"coordinates": [{
        "failure": {"reason": "format_error", "description": f"{missing}: {reason}"},
        "timestamp": AT_ISO}]}}


def test_timestamps_in_other_forms_and_missing() -> None:
    result = map_payload(message(("odo", "1", AT_MS / 1000), ("soc", "2", str(AT_MS)),
                                 ("maxSoc", "90", None)), RECEIVED_MS)
    assert result.data["diagnostics"]["odometer"][0]["timestamp"] == AT_ISO
    assert result.data["charging"]["battery_level"][0]["timestamp"] == AT_ISO
    assert result.data["charging"]["charge_limit"][0]["timestamp"] == "2025-03-01T08:15:35.500Z"
    assert result.newest_ms == RECEIVED_MS


def test_unknown_resources_and_malformed_items_are_ignored() -> None:
    payload = orjson.dumps({"vin": VIN, "resources": [
        {"sunroofstatus": {"value": "0", "timestamp": AT_MS}}, "odo", None, [],
        {"odo": {"value": "12", "timestamp": AT_MS}, "soc": {"value": "50", "timestamp": AT_MS}}]})
    result = map_payload(payload, RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"diagnostics": {"odometer": [entry({"value": 12.0, "unit": "kilometers"})]},
                           "charging": {"battery_level": [entry(0.5)]}}


def test_a_resource_that_is_not_an_object_is_a_format_error() -> None:
    result = map_payload(orjson.dumps({"vin": VIN, "resources": [{"odo": "48213"}]}), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": "odo", "reason": "expected an object, got '48213'"}]
    assert result.data["diagnostics"]["odometer"][0]["timestamp"] == "2025-03-01T08:15:35.500Z"


@pytest.mark.parametrize("payload, field", [
    (b"", "payload"),
    (b"null", "payload"),
    (orjson.dumps({"resources": []}), "vin"),
    (orjson.dumps({"vin": ["W1K"], "resources": []}), "vin"),
    (orjson.dumps({"vin": VIN}), "resources"),
    (orjson.dumps({"vin": VIN, "resources": {"odo": {"value": "1"}}}), "resources"),
])
def test_unreadable_messages_fail(payload: bytes, field: str) -> None:
    result = map_payload(payload, RECEIVED_MS)
    assert (result.outcome, result.data, result.newest_ms) == ("failed", {}, None)
    assert [error["field"] for error in result.errors] == [field]
