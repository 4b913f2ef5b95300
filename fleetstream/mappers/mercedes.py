"""Mercedes-Benz container resources, pushed per vehicle (DATA-CONTRACTS §3, mercedes).

``{"vin", "resources": [{"odo": {"value": "48213", "timestamp": 1740816930000}}, ...]}``.
Values are text, timestamps epoch milliseconds (the receive time when absent).
positionLat and positionLong combine into one coordinates entry.
"""
from __future__ import annotations

from typing import Any, Mapping

from fleetstream.mappers.base import MapResult
from fleetstream.mappers.entries import (
    Target, enum_target, map_records, message_stamp, number_target, read_message, require_list,
    require_vin, target, tire_pressure_reader)
from fleetstream.schemas.units import KPA_TO_BAR, PERCENT_TO_FRACTION

SOURCE = "mercedes"

_CHARGING_STATUS = {
    **dict.fromkeys(("0", "5", "6"), "charging"),
    "1": "charging_complete",
    "2": "charging_paused",
    "4": "charging_error",
    **dict.fromkeys(("3", *(str(code) for code in range(7, 16))), "not_charging"),
}

#: resource -> the property it feeds
_TARGETS: Mapping[str, Target] = {
    "odo": number_target("diagnostics.odometer"),
    "soc": number_target("charging.battery_level", PERCENT_TO_FRACTION),
    "rangeelectric": number_target("charging.estimated_range"),
    "rangeliquid": number_target("diagnostics.estimated_range"),
    "tanklevelpercent": number_target("diagnostics.fuel_level", PERCENT_TO_FRACTION),
    "positionHeading": number_target("vehicle_location.heading"),
    "doorlockstatusvehicle": enum_target("doors.locks_state", {
        "1": "locked", "2": "locked", "0": "unlocked", "3": "unlocked"}),
    **{f"tirepressure{wheel}": target("diagnostics.tire_pressures",
                                      tire_pressure_reader(location, KPA_TO_BAR))
       for wheel, location in (("frontleft", "front_left"), ("frontright", "front_right"),
                               ("rearleft", "rear_left"), ("rearright", "rear_right"))},
    "chargingstatus": enum_target("charging.status", _CHARGING_STATUS),
    "maxSoc": number_target("charging.charge_limit", PERCENT_TO_FRACTION),
    "outsidetemperature": number_target("climate.outside_temperature"),
    "ignitionstate": enum_target("ignition.state", {
        "0": "lock", "1": "off", "2": "accessory", "4": "on", "5": "start"}),
}


def map_payload(payload: str | bytes, received_at_ms: int,
                record_type: str | None = None) -> MapResult:
    """Map one pushed resource message (`record_type` is not read); never raises."""
    return read_message(payload, received_at_ms, _map_message)


def _map_message(message: dict[str, Any], received_at_ms: int) -> MapResult:
    vin = require_vin(message.get("vin"))
    resources = require_list(message.get("resources"), "resources")
    fallback = message_stamp(None, received_at_ms, "received_at")
    records = [item for resource in resources if type(resource) is dict
               for item in resource.items()]
    return map_records(vin, records, _TARGETS, ("positionLat", "positionLong"), fallback)
