"""BMW CarData streaming (DATA-CONTRACTS §3, bmw).

``{"vin", "timestamp", "data": {"<descriptor>": {"value", "unit", "timestamp"}, ...}}``.
Each descriptor carries its own timestamp (the message's `timestamp`, then the
receive time, when it has none). Values may be text; a number must name its unit
in one of the accepted spellings, compared case-insensitively. Latitude and
longitude combine into one coordinates entry.
"""
from __future__ import annotations

from typing import Any, Mapping

from fleetstream.mappers.base import MapResult
from fleetstream.mappers.entries import (
    Target, enum_target, map_records, message_stamp, number_target, read_message,
    require_object, require_vin, target, tire_pressure_reader, unit_number_target)
from fleetstream.schemas.units import KPA_TO_BAR, PERCENT_TO_FRACTION, SAME

SOURCE = "bmw"

_KM = {"km": SAME}
_KMH = {"km/h": SAME}
_PERCENT = {"%": PERCENT_TO_FRACTION, "percent": PERCENT_TO_FRACTION}
_CELSIUS = {"celsius": SAME, "°C": SAME}

_LATITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.latitude"
_LONGITUDE = "vehicle.cabin.infotainment.navigation.currentLocation.longitude"


#: descriptor -> the property it feeds
_TARGETS: Mapping[str, Target] = {
    "vehicle.vehicle.travelledDistance": unit_number_target("diagnostics.odometer", _KM),
    "vehicle.vehicle.speed": unit_number_target("diagnostics.speed", _KMH),
    "vehicle.drivetrain.batteryManagement.header":
        unit_number_target("charging.battery_level", _PERCENT),
    "vehicle.drivetrain.electricEngine.remainingElectricRange":
        unit_number_target("charging.estimated_range", _KM),
    "vehicle.drivetrain.electricEngine.charging.status": enum_target("charging.status", {
        "CHARGINGACTIVE": "charging", "CHARGINGENDED": "charging_complete",
        "CHARGINGPAUSED": "charging_paused", "CHARGINGERROR": "charging_error",
        "NOCHARGING": "not_charging"}),
    "vehicle.drivetrain.electricEngine.charging.level":
        unit_number_target("charging.charge_limit", _PERCENT),
    "vehicle.body.chargingPort.status": enum_target("charging.plugged_in", {
        "CONNECTED": "plugged_in", "DISCONNECTED": "disconnected"}),
    "vehicle.drivetrain.fuelSystem.level": unit_number_target("diagnostics.fuel_level", _PERCENT),
    "vehicle.cabin.infotainment.navigation.currentLocation.heading":
        number_target("vehicle_location.heading"),
    "vehicle.cabin.door.lock.status": enum_target("doors.locks_state", {
        "SECURED": "locked", "LOCKED": "locked", "UNLOCKED": "unlocked"}),
    **{f"vehicle.chassis.axle.{wheel}.tire.pressure": target(
        "diagnostics.tire_pressures", tire_pressure_reader(location, units={"kPa": KPA_TO_BAR}))
       for wheel, location in (("row1.wheel.left", "front_left"),
                               ("row1.wheel.right", "front_right"),
                               ("row2.wheel.left", "rear_left"),
                               ("row2.wheel.right", "rear_right"))},
    "vehicle.cabin.hvac.outsideTemperature":
        unit_number_target("climate.outside_temperature", _CELSIUS),
}


def map_payload(payload: str | bytes, received_at_ms: int,
                record_type: str | None = None) -> MapResult:
    """Map one CarData streaming message (`record_type` is not read); never raises."""
    return read_message(payload, received_at_ms, _map_message)


def _map_message(message: dict[str, Any], received_at_ms: int) -> MapResult:
    vin = require_vin(message.get("vin"))
    fallback = message_stamp(message.get("timestamp"), received_at_ms, "timestamp")
    descriptors = require_object(message.get("data"), "data")
    return map_records(vin, descriptors.items(), _TARGETS, (_LATITUDE, _LONGITUDE), fallback)
