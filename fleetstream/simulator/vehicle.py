"""One simulated vehicle: identity (VIN, make, source) and a state that moves in time.

A vehicle drives around its home city, parks, and (electric ones) plugs in and
charges. `advance(to_ms)` moves the state forward; everything is metric here,
the encoders in `formats` convert to each maker's units.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from random import Random

DRIVING = "driving"
PARKED = "parked"
CHARGING = "charging"

# Charge states, mapped to each maker's codes by the encoders.
UNPLUGGED = "unplugged"
STARTING = "starting"
ACTIVE = "active"
COMPLETE = "complete"

_KM_PER_DEGREE = 111.32
_CITY_RADIUS_KM = 15.0
_MAX_STEP_S = 30.0
_SPEED_TARGETS_KMH = (0, 30, 50, 50, 70, 100, 130)
_VIN_TRANSLITERATION = {**{str(d): d for d in range(10)},
                        **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))),
                        "P": 7, "R": 9, **dict(zip("STUVWXYZ", range(2, 10)))}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_MODEL_YEARS = "NPRST"  # 2022-2026


@dataclass(frozen=True, slots=True)
class Model:
    """A vehicle model: VIN prefix (maker code and descriptor), make and drivetrain."""

    vin_prefix: str
    make: str
    name: str
    combustion: bool = False


@dataclass(frozen=True, slots=True)
class City:
    """A home city: centre, mean outside temperature, and whether cars there show miles."""

    name: str
    latitude: float
    longitude: float
    mean_temperature_c: float
    uses_miles: bool = False


_EUROPE = (City("Berlin", 52.520, 13.405, 6.0), City("Munich", 48.137, 11.575, 5.0),
           City("Stuttgart", 48.776, 9.183, 7.0), City("Oslo", 59.914, 10.752, 0.0))
_AMERICA = (City("Detroit", 42.331, -83.046, 2.0, uses_miles=True),
            City("Austin", 30.267, -97.743, 16.0, uses_miles=True),
            City("Palo Alto", 37.442, -122.143, 13.0, uses_miles=True))

MODELS: dict[str, tuple[Model, ...]] = {
    "tesla": (Model("5YJ3E1EA", "TESLA", "Model 3"), Model("5YJYGDEE", "TESLA", "Model Y"),
              Model("5YJSA1E2", "TESLA", "Model S")),
    "bmw": (Model("WBA73AK0", "BMW", "i4"), Model("WBA31EF0", "BMW", "iX"),
            Model("WBA21EF0", "BMW", "320i", combustion=True)),
    "mercedes": (Model("W1K6G6KB", "MERCEDES-BENZ", "EQS"), Model("W1K2J5KB", "MERCEDES-BENZ", "EQE"),
                 Model("W1KAF4HB", "MERCEDES-BENZ", "C 200", combustion=True)),
    "smartcar": (Model("1FTVW1EL", "FORD", "F-150 Lightning"), Model("1G1FY6S0", "CHEVROLET", "Bolt EV"),
                 Model("KM8KRDAF", "HYUNDAI", "Ioniq 5"),
                 Model("1FTFW1E5", "FORD", "F-150", combustion=True)),
}
MODELS["tesla_telemetry"] = MODELS["tesla"]  # the same cars, their records in protobuf
_HOME_CITIES = {"tesla": _EUROPE + _AMERICA, "bmw": _EUROPE, "mercedes": _EUROPE,
                "smartcar": _AMERICA + _EUROPE[:2], "tesla_telemetry": _EUROPE + _AMERICA}


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 / NHTSA check digit (position 9) for a 17-character VIN."""
    total = sum(_VIN_TRANSLITERATION[c] * w for c, w in zip(vin, _VIN_WEIGHTS))
    return "X" if total % 11 == 10 else str(total % 11)


def make_vin(prefix: str, year: str, plant: str, serial: int) -> str:
    """A VIN from its 8-character prefix, model-year code, plant code and serial number."""
    draft = f"{prefix}0{year}{plant}{serial:06d}"
    return draft[:8] + vin_check_digit(draft) + draft[9:]


class Vehicle:
    """A vehicle's identity and current state; `advance` moves it forward in time."""

    __slots__ = ("index", "source", "model", "vin", "vehicle_id", "rng", "city",
                 "combustion", "at_ms", "mode", "mode_ends_ms", "mode_changed",
                 "latitude", "longitude", "heading", "speed_kmh", "speed_target_kmh",
                 "odometer_km", "battery_kwh", "consumption_kwh_per_km", "soc_pct",
                 "tank_l", "consumption_l_per_km", "fuel_pct", "charge_limit_pct",
                 "charge_state", "charge_power_kw", "dc_charging", "locked",
                 "outside_c", "inside_c", "tires_cold_kpa", "messages_sent")

    def __init__(self, seed: int, index: int, source: str, at_ms: int) -> None:
        rng = Random(f"fleetstream-simulator:{seed}:{index}")
        self.index = index
        self.source = source
        self.rng = rng
        self.model = rng.choice(MODELS[source])
        serial = (Random(f"fleetstream-serials:{seed}").randrange(900_000) + index) % 1_000_000
        self.vin = make_vin(self.model.vin_prefix, rng.choice(_MODEL_YEARS), rng.choice("FAN"), serial)
        self.vehicle_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.city = rng.choice(_HOME_CITIES[source])
        self.combustion = self.model.combustion
        self.at_ms = at_ms
        self.messages_sent = 0
        distance_km, bearing = rng.uniform(0, _CITY_RADIUS_KM), rng.uniform(0, 360)
        self.latitude, self.longitude = self.city.latitude, self.city.longitude
        self._move(distance_km, bearing)
        self.heading = rng.uniform(0, 360)
        self.speed_kmh = self.speed_target_kmh = 0.0
        self.odometer_km = rng.uniform(500, 120_000)
        self.battery_kwh = rng.uniform(60, 100)
        self.consumption_kwh_per_km = rng.uniform(0.15, 0.22)
        self.soc_pct = rng.uniform(25, 90)
        self.tank_l = rng.uniform(45, 70)
        self.consumption_l_per_km = rng.uniform(0.055, 0.09)
        self.fuel_pct = rng.uniform(20, 95)
        self.charge_limit_pct = float(rng.choice((80, 80, 90, 100)))
        self.charge_state, self.charge_power_kw, self.dc_charging = UNPLUGGED, 0.0, False
        self.outside_c = self._outside_temperature()
        self.inside_c = self.outside_c + rng.uniform(0, 5)
        self.tires_cold_kpa = tuple(rng.uniform(240, 265) for _ in range(4))
        first_mode = rng.choice((DRIVING, DRIVING, PARKED, PARKED if self.combustion else CHARGING))
        self._start_mode(first_mode, rng.uniform(0, 0.8))

    @property
    def plugged_in(self) -> bool:
        return self.charge_state != UNPLUGGED

    @property
    def electric_range_km(self) -> float:
        return self.soc_pct / 100 * self.battery_kwh / self.consumption_kwh_per_km

    @property
    def fuel_range_km(self) -> float:
        return self.fuel_pct / 100 * self.tank_l / self.consumption_l_per_km

    @property
    def tires_kpa(self) -> tuple[float, ...]:
        """Front left, front right, rear left, rear right: about 1 kPa more per degree above 15 °C."""
        warming = self.outside_c - 15.0
        return tuple(cold + warming for cold in self.tires_cold_kpa)

    @property
    def ignition(self) -> str:
        """`on` while driving, `lock` when parked and locked, else `off`."""
        return "on" if self.mode == DRIVING else "lock" if self.locked else "off"

    def advance(self, to_ms: int) -> None:
        """Move the state forward to `to_ms` (no-op for a time not after the current one)."""
        while self.at_ms < to_ms:
            step_ms = min(to_ms - self.at_ms, int(_MAX_STEP_S * 1000), max(self.mode_ends_ms - self.at_ms, 1))
            self._step(step_ms / 1000)
            self.at_ms += step_ms
            if self.at_ms >= self.mode_ends_ms:
                self._next_mode()
        self.outside_c = self._outside_temperature()

    def _step(self, dt_s: float) -> None:
        if self.mode == DRIVING:
            self._drive(dt_s)
            self.inside_c += (21.0 - self.inside_c) * min(1.0, dt_s / 300)
        else:
            self.inside_c += (self.outside_c - self.inside_c) * min(1.0, dt_s / 3600)
            if self.mode == CHARGING:
                self._charge(dt_s)

    def _drive(self, dt_s: float) -> None:
        rng = self.rng
        if rng.random() < dt_s / 90:
            self.speed_target_kmh = float(rng.choice(_SPEED_TARGETS_KMH))
        self.speed_kmh += (self.speed_target_kmh - self.speed_kmh) * min(1.0, dt_s / 15)
        self.speed_kmh = max(0.0, self.speed_kmh + (rng.random() - 0.5) * 5)
        if self._distance_from_home_km() > _CITY_RADIUS_KM:
            home = self._bearing_home()
            turn = (home - self.heading + 180) % 360 - 180
            self.heading += max(-45.0, min(45.0, turn))
        self.heading = (self.heading + (rng.random() - 0.5) * 20) % 360
        distance_km = self.speed_kmh * dt_s / 3600
        self._move(distance_km, self.heading)
        self.odometer_km += distance_km
        if self.combustion:
            used_pct = distance_km * self.consumption_l_per_km / self.tank_l * 100
            self.fuel_pct = max(0.0, self.fuel_pct - used_pct)
        else:
            used_pct = distance_km * self.consumption_kwh_per_km / self.battery_kwh * 100
            self.soc_pct = max(0.0, self.soc_pct - used_pct)

    def _charge(self, dt_s: float) -> None:
        if self.charge_state == STARTING and self.rng.random() < 0.5:  # still shaking hands
            return
        if self.soc_pct >= self.charge_limit_pct:
            self.charge_state, self.charge_power_kw = COMPLETE, 0.0
            return
        self.charge_state = ACTIVE
        taper = 1.0 if self.soc_pct < 80 else 0.4
        full_power_kw = self.rng.uniform(120, 150) if self.dc_charging else self.rng.uniform(10.5, 11.0)
        self.charge_power_kw = full_power_kw * taper
        added_pct = self.charge_power_kw * dt_s / 3600 / self.battery_kwh * 100
        self.soc_pct = min(self.charge_limit_pct, self.soc_pct + added_pct)

    def _next_mode(self) -> None:
        rng = self.rng
        if self.mode != DRIVING:
            self._start_mode(DRIVING)
        elif self.combustion:
            if self.fuel_pct < 20:  # a stop at the petrol station on the way
                self.fuel_pct = rng.uniform(90, 100)
            self._start_mode(PARKED)
        else:
            self._start_mode(CHARGING if self.soc_pct < 30 or rng.random() < 0.25 else PARKED)

    def _start_mode(self, mode: str, elapsed_share: float = 0.0) -> None:
        """Enter `mode` for a random duration, `elapsed_share` of which has already passed."""
        rng = self.rng
        self.mode, self.mode_changed = mode, True
        self.locked = mode != DRIVING and rng.random() < 0.9
        self.speed_kmh = self.speed_target_kmh = 0.0
        if mode == DRIVING:
            self.speed_target_kmh = 50.0
            self.charge_state, self.charge_power_kw = UNPLUGGED, 0.0
            minutes = rng.uniform(10, 45)
        elif mode == CHARGING:
            self.dc_charging = rng.random() < 0.3
            self.charge_state = STARTING
            needed_pct = max(0.0, self.charge_limit_pct - self.soc_pct)
            full_minutes = needed_pct / 100 * self.battery_kwh / (130 if self.dc_charging else 11) * 60 / 0.8
            minutes = full_minutes + rng.uniform(5, 60)
        else:
            minutes = rng.uniform(5, 60)
        self.mode_ends_ms = self.at_ms + int(minutes * 60_000 * (1 - elapsed_share))

    def _move(self, distance_km: float, bearing_deg: float) -> None:
        radians = math.radians(bearing_deg)
        self.latitude += distance_km * math.cos(radians) / _KM_PER_DEGREE
        km_per_degree_east = _KM_PER_DEGREE * math.cos(math.radians(self.latitude))
        self.longitude += distance_km * math.sin(radians) / km_per_degree_east

    def _distance_from_home_km(self) -> float:
        north = (self.latitude - self.city.latitude) * _KM_PER_DEGREE
        east = (self.longitude - self.city.longitude) * _KM_PER_DEGREE * math.cos(math.radians(self.latitude))
        return math.hypot(north, east)

    def _bearing_home(self) -> float:
        north = self.city.latitude - self.latitude
        east = (self.city.longitude - self.longitude) * math.cos(math.radians(self.latitude))
        return math.degrees(math.atan2(east, north)) % 360

    def _outside_temperature(self) -> float:
        """The city's mean plus a daily swing peaking mid-afternoon local time."""
        local_hour = (self.at_ms / 3_600_000 + self.city.longitude / 15) % 24
        return self.city.mean_temperature_c + 6 * math.sin((local_hour - 9) / 24 * 2 * math.pi)
