"""Tesla fleet-telemetry records, JSON form (DATA-CONTRACTS §3, tesla).

``{"vin", "createdAt", "data": [{"key": "VehicleSpeed", "value": {"stringValue": "37.2"}}, ...]}``.
Every datum takes the record's `createdAt` (the receive time when it is absent).
A `value` holds one typed field, or ``"invalid": true``: the vehicle's own
"unavailable". Soc wins over BatteryLevel whenever Soc is present; of
ACChargingPower and DCChargingPower the larger is delivered.

The tables and `map_datums` also serve the protobuf form of the same records
(`tesla_telemetry`): one OEM, one field table.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from fleetstream.mappers.base import MapResult
from fleetstream.mappers.entries import (UNAVAILABLE, BadValue, ErrorItem, OemMarked, Outcome,
                                         Stamp, Target, Trouble, deliver, enum_target, finish,
                                         larger_of, message_stamp, number_target, read_coordinates,
                                         read_into, read_message, read_outcome, require_list,
                                         require_vin, show, target, tire_pressure_reader)
from fleetstream.schemas.mapped import Data
from fleetstream.schemas.units import MILES_TO_KM, MPH_TO_KMH, PERCENT_TO_FRACTION

SOURCE = "tesla"

_VALUE_KINDS = frozenset(("stringValue", "intValue", "longValue", "floatValue", "doubleValue",
                          "booleanValue", "locationValue"))

CHARGE_STATUS = {
    "DetailedChargeStateCharging": "charging",
    "DetailedChargeStateStarting": "charging",
    "DetailedChargeStateComplete": "charging_complete",
    "DetailedChargeStateStopped": "charging_paused",
    "DetailedChargeStateNoPower": "charging_error",
    "DetailedChargeStateDisconnected": "not_charging",
}
_PLUGGED_IN = {state: "disconnected" if state == "DetailedChargeStateDisconnected" else "plugged_in"
               for state in CHARGE_STATUS}


def _typed_value(value: object) -> object:
    """The content of a datum's `value`: its one typed field."""
    if type(value) is dict:
        if len(value) == 1:  # the common case
            for kind, raw in value.items():
                if kind in _VALUE_KINDS:
                    return raw
        if value.get("invalid") is True:
            raise OemMarked(UNAVAILABLE, "marked invalid by the vehicle")
        kinds = [kind for kind in value if kind in _VALUE_KINDS]
        if len(kinds) == 1:
            return value[kinds[0]]
    raise BadValue(f"value must hold exactly one typed field, got {show(value)}")


#: key (fleet-telemetry's Field name) -> the properties it feeds
TARGETS: Mapping[str, tuple[Target, ...]] = {
    "VehicleSpeed": (number_target("diagnostics.speed", MPH_TO_KMH),),
    "Odometer": (number_target("diagnostics.odometer", MILES_TO_KM),),
    "EstBatteryRange": (number_target("charging.estimated_range", MILES_TO_KM),),
    "Location": (target("vehicle_location.coordinates", read_coordinates),),
    "GpsHeading": (number_target("vehicle_location.heading"),),
    "Locked": (enum_target("doors.locks_state", {"true": "locked", "false": "unlocked"}),),
    "DetailedChargeState": (enum_target("charging.status", CHARGE_STATUS),
                            enum_target("charging.plugged_in", _PLUGGED_IN)),
    "ChargeLimitSoc": (number_target("charging.charge_limit", PERCENT_TO_FRACTION),),
    "OutsideTemp": (number_target("climate.outside_temperature"),),
    "InsideTemp": (number_target("climate.inside_temperature"),),
    **{key: (target("diagnostics.tire_pressures", tire_pressure_reader(location)),)
       for key, location in (("TpmsPressureFl", "front_left"), ("TpmsPressureFr", "front_right"),
                             ("TpmsPressureRl", "rear_left"), ("TpmsPressureRr", "rear_right"))},
}

_BATTERY_LEVEL = number_target("charging.battery_level", PERCENT_TO_FRACTION)
_CHARGING_RATE = number_target("charging.charging_rate")
#: keys that compete for one property, resolved once the whole record is read
COMPETING: Mapping[str, Target] = {
    "Soc": _BATTERY_LEVEL,
    "BatteryLevel": _BATTERY_LEVEL,
    "ACChargingPower": _CHARGING_RATE,
    "DCChargingPower": _CHARGING_RATE,
}


def map_payload(payload: str | bytes, received_at_ms: int,
                record_type: str | None = None) -> MapResult:
    """Map one JSON fleet-telemetry record (`record_type` is not read); never raises."""
    return read_message(payload, received_at_ms, _map_record)


def _map_record(record: dict[str, Any], received_at_ms: int) -> MapResult:
    vin = require_vin(record.get("vin"))
    stamp = message_stamp(record.get("createdAt"), received_at_ms, "createdAt")
    datums = ((datum.get("key"), datum.get("value")) if type(datum) is dict else (None, None)
              for datum in require_list(record.get("data"), "data"))
    return map_datums(vin, stamp, datums, _typed_value)


def map_datums(vin: str, stamp: Stamp, datums: Iterable[tuple[object, object]],
               typed_value: Callable[[object], object],
               targets: Mapping[str, tuple[Target, ...]] = TARGETS) -> MapResult:
    """Map a record's (key, value) pairs, every one at the record's time `stamp`.

    `typed_value` turns a value into what the readers take, or raises Trouble
    (the failure entry of every property the key feeds). Keys that are not
    text, or not in `targets` or COMPETING, are ignored.
    """
    epoch_ms, timestamp = stamp
    data: Data = {}
    errors: list[ErrorItem] = []
    competing: dict[str, Outcome] = {}
    for key, value in datums:
        if type(key) is not str:
            continue
        into_all = targets.get(key)
        if into_all is None and key not in COMPETING:
            continue
        try:
            raw = typed_value(value)
        except Trouble as trouble:  # each property it feeds gets the failure
            if into_all is None:
                competing[key] = trouble.outcome(key, timestamp)
            else:
                for capability, name, _ in into_all:
                    deliver(data, errors, capability, name, trouble.outcome(key, timestamp))
            continue
        if into_all is None:
            competing[key] = read_outcome(COMPETING[key][2], key, raw, None, timestamp)
        else:
            for into in into_all:
                read_into(data, errors, into, key, raw, None, timestamp)
    if competing:
        _deliver_competing(data, errors, competing)
    return finish(vin, data, errors, epoch_ms)


def _deliver_competing(data: Data, errors: list[ErrorItem], competing: dict[str, Outcome]) -> None:
    """Soc over BatteryLevel whenever Soc is present; the larger charging power."""
    battery_level = competing.get("Soc") or competing.get("BatteryLevel")
    if battery_level is not None:
        deliver(data, errors, _BATTERY_LEVEL[0], _BATTERY_LEVEL[1], battery_level)
    powers = [competing[key] for key in ("ACChargingPower", "DCChargingPower") if key in competing]
    if powers:
        deliver(data, errors, _CHARGING_RATE[0], _CHARGING_RATE[1], larger_of(powers))
