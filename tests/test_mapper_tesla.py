"""Golden payloads for the tesla mapper: every key of DATA-CONTRACTS §3 (tesla)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from fleetstream.mappers.tesla import map_payload

VIN = "5YJ3E7EB0KF000001"
CREATED = "2026-03-01T08:15:30.500Z"
CREATED_MS = 1772352930500
RECEIVED_MS = 1772352931020


def record(*data: tuple[str, Any], **fields: Any) -> bytes:
    """A fleet-telemetry record of `(key, value-object)` pairs."""
    message = {"vin": VIN, "createdAt": CREATED, "isResend": False,
               "data": [{"key": key, "value": value} for key, value in data]}
    message.update(fields)
    return orjson.dumps(message)


def entry(data: Any, timestamp: str = CREATED) -> dict[str, Any]:
    return {"data": data, "timestamp": timestamp}


def failure(reason: str, description: str, timestamp: str = CREATED) -> dict[str, Any]:
    return {"failure": {"reason": reason, "description": description}, "timestamp": timestamp}


def km(value: float) -> dict[str, Any]:
    return {"value": pytest.approx(value), "unit": "kilometers"}


def test_contract_example() -> None:
    result = map_payload(
        '{"vin": "5YJ3E7EB0KF000001", "createdAt": "2026-03-01T08:15:30.500Z", "isResend": false,'
        ' "data": [{"key": "VehicleSpeed", "value": {"stringValue": "37.2"}},'
        '          {"key": "Odometer", "value": {"doubleValue": 12873.4}},'
        '          {"key": "Location", "value": {"locationValue": {"latitude": 52.52, "longitude": 13.405}}},'
        '          {"key": "TpmsPressureFl", "value": {"invalid": true}}]}', RECEIVED_MS)
    assert (result.vin, result.outcome, result.errors, result.newest_ms) == (VIN, "ok", [], CREATED_MS)
    assert result.data == {
        "diagnostics": {
            "speed": [entry({"value": pytest.approx(59.8675968), "unit": "kilometers_per_hour"})],
            "odometer": [entry(km(20717.7290496))],
            "tire_pressures": [failure("unavailable", "TpmsPressureFl: marked invalid by the vehicle")],
        },
        "vehicle_location": {"coordinates": [entry({"latitude": 52.52, "longitude": 13.405})]},
    }


@pytest.mark.parametrize("key, value, capability, name, expected", [
    ("VehicleSpeed", {"doubleValue": 100}, "diagnostics", "speed",
     {"value": pytest.approx(160.9344), "unit": "kilometers_per_hour"}),
    ("Odometer", {"stringValue": "1000"}, "diagnostics", "odometer", km(1609.344)),
    ("Soc", {"floatValue": 71.5}, "charging", "battery_level", 0.715),
    ("BatteryLevel", {"intValue": 56}, "charging", "battery_level", 0.56),
    ("EstBatteryRange", {"doubleValue": 200}, "charging", "estimated_range", km(321.8688)),
    ("Location", {"locationValue": {"latitude": -33.9, "longitude": 151.2}}, "vehicle_location",
     "coordinates", {"latitude": -33.9, "longitude": 151.2}),
    ("GpsHeading", {"stringValue": "271.5"}, "vehicle_location", "heading",
     {"value": 271.5, "unit": "degrees"}),
    ("Locked", {"booleanValue": True}, "doors", "locks_state", "locked"),
    ("Locked", {"booleanValue": False}, "doors", "locks_state", "unlocked"),
    ("Locked", {"stringValue": "true"}, "doors", "locks_state", "locked"),
    ("ChargeLimitSoc", {"longValue": "80"}, "charging", "charge_limit", 0.8),
    ("ACChargingPower", {"doubleValue": 7.2}, "charging", "charging_rate",
     {"value": 7.2, "unit": "kilowatts"}),
    ("DCChargingPower", {"stringValue": "150"}, "charging", "charging_rate",
     {"value": 150.0, "unit": "kilowatts"}),
    ("OutsideTemp", {"doubleValue": -5.5}, "climate", "outside_temperature",
     {"value": -5.5, "unit": "celsius"}),
    ("InsideTemp", {"stringValue": "21"}, "climate", "inside_temperature",
     {"value": 21.0, "unit": "celsius"}),
    ("TpmsPressureFl", {"doubleValue": 2.9}, "diagnostics", "tire_pressures",
     {"location": "front_left", "pressure": {"value": 2.9, "unit": "bars"}}),
    ("TpmsPressureFr", {"doubleValue": 2.8}, "diagnostics", "tire_pressures",
     {"location": "front_right", "pressure": {"value": 2.8, "unit": "bars"}}),
    ("TpmsPressureRl", {"stringValue": "2.7"}, "diagnostics", "tire_pressures",
     {"location": "rear_left", "pressure": {"value": 2.7, "unit": "bars"}}),
    ("TpmsPressureRr", {"floatValue": 2.6}, "diagnostics", "tire_pressures",
     {"location": "rear_right", "pressure": {"value": 2.6, "unit": "bars"}}),
])
def test_each_key(key: str, value: dict[str, Any], capability: str, name: str, expected: Any) -> None:
    result = map_payload(record((key, value)), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {capability: {name: [entry(expected)]}}


@pytest.mark.parametrize("state, status, plugged_in", [
    ("DetailedChargeStateCharging", "charging", "plugged_in"),
    ("DetailedChargeStateStarting", "charging", "plugged_in"),
    ("DetailedChargeStateComplete", "charging_complete", "plugged_in"),
    ("DetailedChargeStateStopped", "charging_paused", "plugged_in"),
    ("DetailedChargeStateNoPower", "charging_error", "plugged_in"),
    ("DetailedChargeStateDisconnected", "not_charging", "disconnected"),
])
def test_detailed_charge_state_feeds_status_and_plugged_in(state: str, status: str,
                                                            plugged_in: str) -> None:
    result = map_payload(record(("DetailedChargeState", {"stringValue": state})), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"charging": {"status": [entry(status)], "plugged_in": [entry(plugged_in)]}}


def test_unknown_charge_state_is_a_format_error_of_both_properties() -> None:
    result = map_payload(record(("DetailedChargeState", {"stringValue": "DetailedChargeStateUnknown"})),
                         RECEIVED_MS)
    description = "DetailedChargeState: unknown code 'DetailedChargeStateUnknown'"
    assert result.outcome == "partial"
    assert result.data == {"charging": {"status": [failure("format_error", description)],
                                        "plugged_in": [failure("format_error", description)]}}
    assert result.errors == [{"field": "DetailedChargeState",
                              "reason": "unknown code 'DetailedChargeStateUnknown'"}] * 2


def test_soc_wins_over_battery_level_in_either_order() -> None:
    for data in ((("Soc", {"doubleValue": 71.5}), ("BatteryLevel", {"doubleValue": 70})),
                 (("BatteryLevel", {"doubleValue": 70}), ("Soc", {"doubleValue": 71.5}))):
        result = map_payload(record(*data), RECEIVED_MS)
        assert result.data == {"charging": {"battery_level": [entry(0.715)]}}


def test_soc_wins_even_when_invalid() -> None:
    result = map_payload(record(("Soc", {"invalid": True}), ("BatteryLevel", {"doubleValue": 70})),
                         RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"charging": {"battery_level": [
        failure("unavailable", "Soc: marked invalid by the vehicle")]}}


@pytest.mark.parametrize("ac, dc, expected", [
    ({"doubleValue": 11}, {"doubleValue": 150.5}, {"value": 150.5, "unit": "kilowatts"}),
    ({"doubleValue": 11}, {"doubleValue": 0}, {"value": 11.0, "unit": "kilowatts"}),
    ({"invalid": True}, {"doubleValue": 50}, {"value": 50.0, "unit": "kilowatts"}),
    ({"doubleValue": 7}, {"invalid": True}, {"value": 7.0, "unit": "kilowatts"}),
])
def test_charging_rate_is_the_larger_of_ac_and_dc(ac: dict[str, Any], dc: dict[str, Any],
                                                  expected: Any) -> None:
    result = map_payload(record(("ACChargingPower", ac), ("DCChargingPower", dc)), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"charging": {"charging_rate": [entry(expected)]}}


def test_charging_rate_with_an_unreadable_half_is_a_format_error() -> None:
    result = map_payload(record(("ACChargingPower", {"doubleValue": 11}),
                                ("DCChargingPower", {"stringValue": "fast"})), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.data == {"charging": {"charging_rate": [
        failure("format_error", "DCChargingPower: not a number: 'fast'")]}}
    assert result.errors == [{"field": "DCChargingPower", "reason": "not a number: 'fast'"}]


def test_charging_rate_when_both_are_invalid() -> None:
    result = map_payload(record(("ACChargingPower", {"invalid": True}),
                                ("DCChargingPower", {"invalid": True})), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"charging": {"charging_rate": [
        failure("unavailable", "ACChargingPower: marked invalid by the vehicle")]}}


def test_invalid_values_are_the_oems_failures_not_partial() -> None:
    result = map_payload(record(("Odometer", {"invalid": True}), ("Locked", {"invalid": True}),
                                ("DetailedChargeState", {"invalid": True})), RECEIVED_MS)
    assert (result.outcome, result.errors) == ("ok", [])
    assert result.data == {
        "diagnostics": {"odometer": [failure("unavailable", "Odometer: marked invalid by the vehicle")]},
        "doors": {"locks_state": [failure("unavailable", "Locked: marked invalid by the vehicle")]},
        "charging": {
            "status": [failure("unavailable", "DetailedChargeState: marked invalid by the vehicle")],
            "plugged_in": [failure("unavailable", "DetailedChargeState: marked invalid by the vehicle")]},
    }


@pytest.mark.parametrize("key, value, capability, name, reason", [
    ("Odometer", {"stringValue": "abc"}, "diagnostics", "odometer", "not a number: 'abc'"),
    ("Odometer", {"booleanValue": True}, "diagnostics", "odometer", "not a number: True"),
    ("Odometer", {"stringValue": "NaN"}, "diagnostics", "odometer", "nan is outside 0 to 2000000"),
    ("VehicleSpeed", {"doubleValue": 400}, "diagnostics", "speed", "643.7376 is outside 0 to 500"),
    ("OutsideTemp", {"doubleValue": 81}, "climate", "outside_temperature", "81 is outside -80 to 80"),
    ("Soc", {"doubleValue": 101}, "charging", "battery_level", "1.01 is outside 0 to 1"),
    ("TpmsPressureFl", {"doubleValue": -1}, "diagnostics", "tire_pressures", "-1 is outside 0 to 10"),
    ("Locked", {"intValue": 1}, "doors", "locks_state", "unknown code 1"),
    ("Location", {"locationValue": {"latitude": 91, "longitude": 0}}, "vehicle_location",
     "coordinates", "latitude: 91 is outside -90 to 90"),
    ("Location", {"locationValue": {"latitude": 0}}, "vehicle_location", "coordinates",
     "longitude: not a number: None"),
    ("Location", {"stringValue": "52.5,13.4"}, "vehicle_location", "coordinates",
     "not a location: '52.5,13.4'"),
    ("Odometer", {"doubleValue": 1, "stringValue": "1"}, "diagnostics", "odometer",
     "value must hold exactly one typed field, got {'doubleValue': 1, 'stringValue': '1'}"),
    ("Odometer", {"chargeStateValue": "x"}, "diagnostics", "odometer",
     "value must hold exactly one typed field, got {'chargeStateValue': 'x'}"),
    ("Odometer", "12", "diagnostics", "odometer", "value must hold exactly one typed field, got '12'"),
])
def test_unreadable_values_are_format_errors(key: str, value: Any, capability: str, name: str,
                                             reason: str) -> None:
    result = map_payload(record((key, value), ("GpsHeading", {"intValue": 5})), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": key, "reason": reason}]
    assert result.data[capability][name] == [failure("format_error", f"{key}: {reason}")]
    assert result.data["vehicle_location"]["heading"] == [entry({"value": 5.0, "unit": "degrees"})]


def test_only_format_errors_is_still_partial() -> None:
    result = map_payload(record(("Odometer", {"stringValue": "?"})), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.data == {"diagnostics": {"odometer": [
        failure("format_error", "Odometer: not a number: '?'")]}}


def test_unknown_keys_and_malformed_items_are_ignored() -> None:
    payload = orjson.dumps({"vin": VIN, "createdAt": CREATED, "data": [
        {"key": "SentryMode", "value": {"stringValue": "Armed"}}, {"value": {"doubleValue": 1}},
        {"key": 7, "value": {}}, "Odometer", None, {"key": "Odometer", "value": {"intValue": 10}}]})
    result = map_payload(payload, RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"diagnostics": {"odometer": [entry(km(16.09344))]}}


def test_no_known_keys_is_ok_without_data() -> None:
    result = map_payload(record(("SentryMode", {"stringValue": "Armed"})), RECEIVED_MS)
    assert (result.vin, result.outcome, result.data, result.errors, result.newest_ms) == (
        VIN, "ok", {}, [], None)


def test_created_at_in_epoch_forms_and_missing() -> None:
    for created in (CREATED_MS, CREATED_MS / 1000, str(CREATED_MS)):
        result = map_payload(record(("GpsHeading", {"intValue": 1}), createdAt=created), RECEIVED_MS)
        assert result.data["vehicle_location"]["heading"][0]["timestamp"] == CREATED
    result = map_payload(record(("GpsHeading", {"intValue": 1}), createdAt=None), RECEIVED_MS)
    assert result.data["vehicle_location"]["heading"][0]["timestamp"] == "2026-03-01T08:15:31.020Z"
    assert result.newest_ms == RECEIVED_MS


@pytest.mark.parametrize("payload, field", [
    (b"not json", "payload"),
    (b"\xff\xfe{}", "payload"),
    (b"[1, 2]", "payload"),
    (orjson.dumps({"createdAt": CREATED, "data": []}), "vin"),
    (orjson.dumps({"vin": "", "createdAt": CREATED, "data": []}), "vin"),
    (orjson.dumps({"vin": 12345, "createdAt": CREATED, "data": []}), "vin"),
    (orjson.dumps({"vin": VIN, "createdAt": CREATED}), "data"),
    (orjson.dumps({"vin": VIN, "createdAt": CREATED, "data": {"key": "Odometer"}}), "data"),
    (orjson.dumps({"vin": VIN, "createdAt": "yesterday", "data": []}), "createdAt"),
    (orjson.dumps({"vin": VIN, "createdAt": -5, "data": []}), "createdAt"),
])
def test_unreadable_messages_fail(payload: bytes, field: str) -> None:
    result = map_payload(payload, RECEIVED_MS)
    assert (result.outcome, result.data, result.newest_ms) == ("failed", {}, None)
    assert [error["field"] for error in result.errors] == [field]


def test_text_and_bytes_payloads_map_alike() -> None:
    payload = record(("Odometer", {"intValue": 10}))
    assert map_payload(payload, RECEIVED_MS).data == map_payload(payload.decode(), RECEIVED_MS).data
