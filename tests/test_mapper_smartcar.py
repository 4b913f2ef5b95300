"""Golden payloads for the smartcar mapper: every code of DATA-CONTRACTS §3 (smartcar)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from fleetstream.mappers.smartcar import map_payload

VIN = "1FTFW1E50NFA00001"
AT_MS = 1740816930000
AT_ISO = "2025-03-01T08:15:30.000Z"
RECEIVED_MS = 1740816936000
RECEIVED_ISO = "2025-03-01T08:15:36.000Z"


def signal(code: str, body: Any, meta: Any = None) -> dict[str, Any]:
    return {"code": code, "body": body, "status": {"value": "SUCCESS"},
            "meta": {"oemUpdatedAt": AT_MS} if meta is None else meta}


def event(*signals: dict[str, Any], event_type: str = "VEHICLE_STATE") -> bytes:
    return orjson.dumps({"eventId": "e1", "eventType": event_type,
                         "data": {"vehicle": {"id": "v1", "make": "FORD", "vin": VIN},
                                  "signals": list(signals)},
                         "meta": {"version": "4.0", "deliveryId": "d1"}})


def entry(data: Any, timestamp: str = AT_ISO) -> dict[str, Any]:
    return {"data": data, "timestamp": timestamp}


def test_contract_example() -> None:
    result = map_payload(
        '{"eventId": "e1", "eventType": "VEHICLE_STATE",'
        ' "data": {"vehicle": {"id": "v1", "make": "FORD", "vin": "1FTFW1E50NFA00001"},'
        '          "signals": [{"code": "tractionbattery-stateofcharge", "body": {"unit": "percent", "value": 75},'
        '                       "status": {"value": "SUCCESS"}, "meta": {"oemUpdatedAt": 1740816930000}},'
        '                      {"code": "location-preciselocation", "body": {"latitude": 52.5, "longitude": 13.4, "heading": 90},'
        '                       "status": {"value": "SUCCESS"}, "meta": {"oemUpdatedAt": 1740816930000}},'
        '                      {"code": "closure-islocked", "status": {"value": "ERROR",'
        '                       "error": {"code": "VEHICLE_NOT_CAPABLE", "type": "COMPATIBILITY"}}}]},'
        ' "meta": {"version": "4.0", "deliveryId": "d1"}}', RECEIVED_MS)
    assert (result.vin, result.outcome, result.errors) == (VIN, "ok", [])
    assert result.newest_ms == RECEIVED_MS
    assert result.data == {
        "charging": {"battery_level": [entry(0.75)]},
        "vehicle_location": {"coordinates": [entry({"latitude": 52.5, "longitude": 13.4})],
                             "heading": [entry({"value": 90.0, "unit": "degrees"})]},
        "doors": {"locks_state": [{"failure": {
            "reason": "unavailable", "description": "closure-islocked: COMPATIBILITY VEHICLE_NOT_CAPABLE"},
            "timestamp": RECEIVED_ISO}]},
    }


@pytest.mark.parametrize("code, body, capability, name, expected", [
    ("odometer-traveleddistance", {"value": 48213, "unit": "km"}, "diagnostics", "odometer",
     {"value": 48213.0, "unit": "kilometers"}),
    ("odometer-traveleddistance", {"value": 1000, "unit": "miles"}, "diagnostics", "odometer",
     {"value": pytest.approx(1609.344), "unit": "kilometers"}),
    ("tractionbattery-stateofcharge", {"value": 75, "unit": "percent"}, "charging", "battery_level",
     0.75),
    ("tractionbattery-stateofcharge", {"value": 0.75, "unit": "fraction"}, "charging",
     "battery_level", 0.75),
    ("tractionbattery-range", {"value": 320.5, "unit": "km"}, "charging", "estimated_range",
     {"value": 320.5, "unit": "kilometers"}),
    ("tractionbattery-range", {"value": 200, "unit": "miles"}, "charging", "estimated_range",
     {"value": pytest.approx(321.8688), "unit": "kilometers"}),
    ("fuel-percentremaining", {"value": 43, "unit": "percent"}, "diagnostics", "fuel_level", 0.43),
    ("fuel-percentremaining", {"value": 0.43, "unit": "fraction"}, "diagnostics", "fuel_level", 0.43),
    ("charge-chargelimit", {"value": 90, "unit": "percent"}, "charging", "charge_limit", 0.9),
    ("charge-chargelimit", {"value": 0.9, "unit": "fraction"}, "charging", "charge_limit", 0.9),
    ("charge-chargingstate", {"value": "CHARGING"}, "charging", "status", "charging"),
    ("charge-chargingstate", {"value": "FULLY_CHARGED"}, "charging", "status", "charging_complete"),
    ("charge-chargingstate", {"value": "NOT_CHARGING"}, "charging", "status", "not_charging"),
    ("charge-ischargingcableconnected", {"value": True}, "charging", "plugged_in", "plugged_in"),
    ("charge-ischargingcableconnected", {"value": False}, "charging", "plugged_in", "disconnected"),
    ("closure-islocked", {"value": True}, "doors", "locks_state", "locked"),
    ("closure-islocked", {"value": False}, "doors", "locks_state", "unlocked"),
    ("location-preciselocation", {"latitude": 40.7, "longitude": -74.0}, "vehicle_location",
     "coordinates", {"latitude": 40.7, "longitude": -74.0}),
])
def test_each_code_and_unit(code: str, body: dict[str, Any], capability: str, name: str,
                            expected: Any) -> None:
    result = map_payload(event(signal(code, body)), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {capability: {name: [entry(expected)]}}


@pytest.mark.parametrize("code, body, capability, name, reason", [
    ("tractionbattery-stateofcharge", {"value": 75, "unit": "miles"}, "charging", "battery_level",
     "unit 'miles' is not one of percent, fraction"),
    ("tractionbattery-stateofcharge", {"value": 75}, "charging", "battery_level",
     "unit None is not one of percent, fraction"),
    ("tractionbattery-stateofcharge", {"value": 75, "unit": "fraction"}, "charging",
     "battery_level", "75 is outside 0 to 1"),
    ("odometer-traveleddistance", {"value": 10, "unit": "percent"}, "diagnostics", "odometer",
     "unit 'percent' is not one of km, miles"),
    ("odometer-traveleddistance", {"value": "far", "unit": "km"}, "diagnostics", "odometer",
     "not a number: 'far'"),
    ("tractionbattery-range", {"value": 2000, "unit": "miles"}, "charging", "estimated_range",
     "3218.688 is outside 0 to 3000"),
    ("charge-chargingstate", {"value": "DISCHARGING"}, "charging", "status",
     "unknown code 'DISCHARGING'"),
    ("closure-islocked", {"value": "yes"}, "doors", "locks_state", "unknown code 'yes'"),
    ("closure-islocked", None, "doors", "locks_state", "body is not an object: None"),
    ("location-preciselocation", {"latitude": 40.7}, "vehicle_location", "coordinates",
     "longitude: not a number: None"),
])
def test_unreadable_values_are_format_errors(code: str, body: Any, capability: str, name: str,
                                             reason: str) -> None:
    result = map_payload(event(signal(code, body)), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": code, "reason": reason}]
    assert result.data == {capability: {name: [{
        "failure": {"reason": "format_error", "description": f"{code}: {reason}"},
        "timestamp": AT_ISO}]}}


def test_location_heading_out_of_range_is_a_format_error_beside_good_coordinates() -> None:
    result = map_payload(event(signal("location-preciselocation",
                                      {"latitude": 1.5, "longitude": 2.5, "heading": 400})), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": "location-preciselocation",
                              "reason": "400 is outside 0 to 360"}]
    assert result.data["vehicle_location"]["coordinates"] == [
        entry({"latitude": 1.5, "longitude": 2.5})]


@pytest.mark.parametrize("error, reason, description", [
    ({"code": "VEHICLE_NOT_CAPABLE", "type": "COMPATIBILITY"}, "unavailable",
     "odometer-traveleddistance: COMPATIBILITY VEHICLE_NOT_CAPABLE"),
    ({"code": "UPSTREAM_UNAVAILABLE", "type": "UPSTREAM"}, "oem_error",
     "odometer-traveleddistance: UPSTREAM UPSTREAM_UNAVAILABLE"),
    (None, "oem_error", "odometer-traveleddistance: error None"),
])
def test_error_status_is_the_oems_failure_not_partial(error: Any, reason: str,
                                                      description: str) -> None:
    result = map_payload(event({"code": "odometer-traveleddistance", "meta": {"retrievedAt": AT_MS},
                                "status": {"value": "ERROR", "error": error}}), RECEIVED_MS)
    assert (result.outcome, result.errors) == ("ok", [])
    assert result.data == {"diagnostics": {"odometer": [{
        "failure": {"reason": reason, "description": description}, "timestamp": AT_ISO}]}}


@pytest.mark.parametrize("meta, timestamp", [
    ({"oemUpdatedAt": AT_MS, "retrievedAt": AT_MS + 5000}, AT_ISO),
    ({"oemUpdatedAt": "2025-03-01T08:15:30Z"}, AT_ISO),
    ({"oemUpdatedAt": None, "retrievedAt": AT_MS + 5000}, "2025-03-01T08:15:35.000Z"),
    ({"retrievedAt": AT_MS + 5000}, "2025-03-01T08:15:35.000Z"),
    ({}, RECEIVED_ISO),
    ("none", RECEIVED_ISO),
])
def test_signal_time_falls_back_from_oem_update_to_retrieval_to_receipt(meta: Any,
                                                                         timestamp: str) -> None:
    result = map_payload(event(signal("closure-islocked", {"value": True}, meta=meta)), RECEIVED_MS)
    assert result.data == {"doors": {"locks_state": [entry("locked", timestamp)]}}


def test_an_unreadable_signal_time_is_a_format_error() -> None:
    result = map_payload(event(signal("closure-islocked", {"value": True},
                                      meta={"oemUpdatedAt": "later"})), RECEIVED_MS)
    assert result.outcome == "partial"
    assert result.errors == [{"field": "closure-islocked", "reason": "unreadable timestamp 'later'"}]
    assert result.data["doors"]["locks_state"][0]["timestamp"] == RECEIVED_ISO


@pytest.mark.parametrize("event_type", ["VERIFY", "VEHICLE_ERROR", "SOMETHING_NEW"])
def test_events_without_state_are_ignored(event_type: str) -> None:
    result = map_payload(orjson.dumps({"eventId": "e2", "eventType": event_type,
                                       "data": {"challenge": "abc"}}), RECEIVED_MS)
    assert (result.outcome, result.data, result.errors, result.newest_ms) == ("ignored", {}, [], None)


def test_unknown_codes_and_malformed_signals_are_ignored() -> None:
    result = map_payload(event(signal("tires-pressure", {"frontLeft": 240}), "odometer", {"body": {}},
                               signal("closure-islocked", {"value": False})), RECEIVED_MS)
    assert result.outcome == "ok"
    assert result.data == {"doors": {"locks_state": [entry("unlocked")]}}


def test_no_signals_is_ok_without_data() -> None:
    result = map_payload(event(), RECEIVED_MS)
    assert (result.vin, result.outcome, result.data, result.newest_ms) == (VIN, "ok", {}, None)


@pytest.mark.parametrize("payload, field", [
    (b"<xml/>", "payload"),
    (b"42", "payload"),
    (orjson.dumps({"data": {}}), "eventType"),
    (orjson.dumps({"eventType": 4, "data": {}}), "eventType"),
    (orjson.dumps({"eventType": "VEHICLE_STATE"}), "data"),
    (orjson.dumps({"eventType": "VEHICLE_STATE", "data": {"signals": []}}), "data.vehicle"),
    (orjson.dumps({"eventType": "VEHICLE_STATE", "data": {"vehicle": {}, "signals": []}}),
     "data.vehicle.vin"),
    (orjson.dumps({"eventType": "VEHICLE_STATE", "data": {"vehicle": {"vin": VIN}}}), "data.signals"),
])
def test_unreadable_messages_fail(payload: bytes, field: str) -> None:
    result = map_payload(payload, RECEIVED_MS)
    assert (result.outcome, result.data, result.newest_ms) == ("failed", {}, None)
    assert [error["field"] for error in result.errors] == [field]
