"""The common property catalogue (DATA-CONTRACTS §2) as data.

Every property a mapper may emit is listed here once, with its kind, unit and
plausible range. Mappers, configuration validation and permission filtering
all read this table; nothing else defines what a property is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

NUMBER = "number"      # {"value": x, "unit": unit}
FRACTION = "fraction"  # bare float 0..1
ENUM = "enum"          # bare string from `values`
COORDINATES = "coordinates"  # {"latitude": .., "longitude": ..}
TIRE_PRESSURE = "tire_pressure"  # {"location": .., "pressure": {"value", "unit"}}

TIRE_LOCATIONS = ("front_left", "front_right", "rear_left", "rear_right")


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One catalogue row: `capability.property`, its kind, unit and range."""

    capability: str
    name: str
    kind: str
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.capability}.{self.name}"


def _num(cap: str, name: str, unit: str, lo: float, hi: float) -> PropertySpec:
    return PropertySpec(cap, name, NUMBER, unit, lo, hi)


def _frac(cap: str, name: str) -> PropertySpec:
    return PropertySpec(cap, name, FRACTION, None, 0.0, 1.0)


def _enum(cap: str, name: str, *values: str) -> PropertySpec:
    return PropertySpec(cap, name, ENUM, values=values)


_ROWS = (
    _num("diagnostics", "odometer", "kilometers", 0, 2_000_000),
    _num("diagnostics", "speed", "kilometers_per_hour", 0, 500),
    _frac("diagnostics", "fuel_level"),
    _num("diagnostics", "estimated_range", "kilometers", 0, 3_000),
    _num("diagnostics", "battery_voltage", "volts", 0, 1_000),
    PropertySpec("diagnostics", "tire_pressures", TIRE_PRESSURE, "bars", 0, 10),
    _frac("charging", "battery_level"),
    _num("charging", "estimated_range", "kilometers", 0, 3_000),
    _enum("charging", "status", "not_charging", "charging", "charging_complete",
          "charging_paused", "charging_error"),
    _frac("charging", "charge_limit"),
    _enum("charging", "plugged_in", "disconnected", "plugged_in"),
    _num("charging", "charging_rate", "kilowatts", 0, 1_000),
    PropertySpec("vehicle_location", "coordinates", COORDINATES),
    _num("vehicle_location", "heading", "degrees", 0, 360),
    _enum("doors", "locks_state", "unlocked", "locked"),
    _num("climate", "outside_temperature", "celsius", -80, 80),
    _num("climate", "inside_temperature", "celsius", -80, 100),
    _enum("ignition", "state", "lock", "off", "accessory", "on", "start"),
)

#: `capability.property` -> spec
PROPERTIES: Mapping[str, PropertySpec] = {row.key: row for row in _ROWS}

#: capability -> its property names
CAPABILITIES: Mapping[str, tuple[str, ...]] = {
    cap: tuple(r.name for r in _ROWS if r.capability == cap)
    for cap in dict.fromkeys(r.capability for r in _ROWS)
}


def expand_permission(pattern: str) -> tuple[str, ...]:
    """Expand `capability.property` or `capability.*` to catalogue keys.

    Raises ValueError naming the pattern when it matches nothing.
    """
    cap, _, prop = pattern.partition(".")
    if cap not in CAPABILITIES:
        raise ValueError(
            f"unknown capability {cap!r} in permission {pattern!r}; "
            f"known: {', '.join(CAPABILITIES)}")
    if prop == "*":
        return tuple(f"{cap}.{p}" for p in CAPABILITIES[cap])
    if pattern not in PROPERTIES:
        raise ValueError(
            f"unknown property {pattern!r}; {cap} has: "
            f"{', '.join(CAPABILITIES[cap])} (or {cap}.*)")
    return (pattern,)
